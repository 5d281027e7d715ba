//! BM25 over code-aware tokens, held in memory per repository. A document's term frequencies are
//! weighted by field: a token in the symbol name or the file name counts more than one in the body.

use std::collections::HashMap;

use super::weights::w;

/// Weighted term frequencies of one document.
pub type Bag = HashMap<String, f32>;

#[derive(Default)]
pub struct Bm25 {
    /// token → (document, weighted term frequency), documents ascending.
    postings: HashMap<Box<str>, Vec<(u32, f32)>>,
    lengths: Vec<f32>,
    average_length: f32,
}

impl Bm25 {
    /// Indexes documents 0.. in order.
    pub fn build(bags: impl IntoIterator<Item = Bag>) -> Bm25 {
        let mut postings: HashMap<Box<str>, Vec<(u32, f32)>> = HashMap::new();
        let mut lengths = Vec::new();
        for (doc, bag) in bags.into_iter().enumerate() {
            lengths.push(bag.values().sum());
            for (token, tf) in bag {
                postings
                    .entry(token.into_boxed_str())
                    .or_default()
                    .push((doc as u32, tf));
            }
        }
        let average_length = if lengths.is_empty() {
            1.0
        } else {
            (lengths.iter().sum::<f32>() / lengths.len() as f32).max(1.0)
        };
        postings.shrink_to_fit();
        for list in postings.values_mut() {
            list.shrink_to_fit();
        }
        Bm25 {
            postings,
            lengths,
            average_length,
        }
    }

    /// Bytes held, roughly (for the index cache's budget).
    pub fn memory_bytes(&self) -> usize {
        self.postings
            .iter()
            .map(|(token, list)| token.len() + 48 + list.len() * 8)
            .sum::<usize>()
            + self.lengths.len() * 4
    }

    /// Inverse document frequency (Lucene's, never negative).
    pub fn idf(&self, token: &str) -> f32 {
        let n = self.lengths.len() as f32;
        let df = self.postings.get(token).map_or(0, Vec::len) as f32;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }

    fn term_score(&self, tf: f32, length: f32, idf: f32) -> f32 {
        let norm = w().bm25_k1 * (1.0 - w().bm25_b + w().bm25_b * length / self.average_length);
        idf * tf * (w().bm25_k1 + 1.0) / (tf + norm)
    }

    /// Scores every document containing a query token; `scores` has one slot per document.
    pub fn score_all(&self, query: &[String], scores: &mut [f32]) {
        for token in distinct(query) {
            let Some(list) = self.postings.get(token) else {
                continue;
            };
            let idf = self.idf(token);
            for &(doc, tf) in list {
                scores[doc as usize] += self.term_score(tf, self.lengths[doc as usize], idf);
            }
        }
    }

    /// Scores a document that is not in the index (an uncommitted file) with the index's
    /// statistics.
    pub fn score_bag(&self, query: &[String], bag: &Bag) -> f32 {
        let length: f32 = bag.values().sum();
        distinct(query)
            .filter_map(|t| {
                bag.get(t)
                    .map(|tf| self.term_score(*tf, length, self.idf(t)))
            })
            .sum()
    }
}

fn distinct(query: &[String]) -> impl Iterator<Item = &str> {
    let mut seen = std::collections::HashSet::new();
    query
        .iter()
        .map(String::as_str)
        .filter(move |t| seen.insert(*t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bag(words: &[&str]) -> Bag {
        let mut b = Bag::new();
        for w in words {
            *b.entry((*w).to_owned()).or_default() += 1.0;
        }
        b
    }

    #[test]
    fn rarer_and_more_frequent_terms_score_higher() {
        let index = Bm25::build([
            bag(&["parse", "args", "parse"]),
            bag(&["parse", "file"]),
            bag(&["render", "html"]),
        ]);
        let mut scores = vec![0.0; 3];
        index.score_all(&["parse".into(), "args".into()], &mut scores);
        assert!(
            scores[0] > scores[1] && scores[1] > 0.0 && scores[2] == 0.0,
            "{scores:?}"
        );
        let outside = index.score_bag(&["args".into()], &bag(&["args"]));
        assert!(outside > 0.0);
    }
}
