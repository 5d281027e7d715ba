//! Graph rewrites of an ONNX model before ONNX Runtime loads it: for models that store weights as
//! 8-bit integers with `f32` scales (`Mul(Cast(codes), scale)`), which ONNX Runtime's constant
//! folding would otherwise unpack to `f32` at load, and operator fusions its optimiser does not
//! find in this exporter's graphs.
//!
//! - [`gather_before_dequantize`]: a table lookup fetches the integers first and scales only the
//!   rows it fetched. For MiniLM's word table that is 12 MB per session instead of 47, and every
//!   value is computed exactly as before (one cast and one multiply per element, on the same
//!   operands).
//! - [`integer_matmuls`]: a product with a weight matrix multiplies 8-bit integers
//!   (`DynamicQuantizeMatMul`). A query takes about 2 ms instead of 5 (it reads a quarter of the
//!   weight bytes), but values change slightly and depend on the batch: for queries only.
//! - [`fused_attention`] and [`fused_gelu`]: each layer's self-attention and GELU, written out in
//!   standard operators, become one ONNX Runtime operator each (for queries, about 0.5 ms less).
//!   The attention pattern cannot prove what its dropped mask arithmetic computed, so the
//!   embedder uses the fusions only after the exact model with them has matched it without them,
//!   and only where they fuse the same blocks in the model it serves.
//!
//! The model is edited at the protobuf wire level (ModelProto → GraphProto → NodeProto), touching
//! only the nodes of the pattern (and, after a fusion, nodes nothing reads any more) and copying
//! every other byte as it is, so no ONNX schema crate is needed.

use std::collections::{HashMap, HashSet};

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("the model is not a valid protobuf message: {0}")]
    Malformed(&'static str),
}

type Result<T> = std::result::Result<T, RewriteError>;

const MODEL_GRAPH: u64 = 7;
const MODEL_OPSET_IMPORT: u64 = 8;
const GRAPH_NODE: u64 = 1;
const GRAPH_INITIALIZER: u64 = 5;
const GRAPH_INPUT: u64 = 11;
const GRAPH_OUTPUT: u64 = 12;
const NODE_INPUT: u64 = 1;
const NODE_OUTPUT: u64 = 2;
const NODE_NAME: u64 = 3;
const NODE_OP_TYPE: u64 = 4;
const NODE_ATTRIBUTE: u64 = 5;
const NODE_DOMAIN: u64 = 7;

const LEN: u64 = 2;

/// One field of a message: its number, wire type and bytes (the payload for length-delimited
/// fields, the value bytes otherwise), and the whole encoding to copy it unchanged.
struct Field<'a> {
    number: u64,
    wire: u64,
    payload: &'a [u8],
    whole: &'a [u8],
}

fn varint(buf: &[u8], at: &mut usize) -> Result<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *buf
            .get(*at)
            .ok_or(RewriteError::Malformed("truncated varint"))?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(RewriteError::Malformed("varint too long"))
}

fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        let start = at;
        let tag = varint(buf, &mut at)?;
        let (number, wire) = (tag >> 3, tag & 7);
        let len = match wire {
            0 => {
                varint(buf, &mut at)?;
                0
            }
            1 => 8,
            5 => 4,
            LEN => varint(buf, &mut at)? as usize,
            _ => return Err(RewriteError::Malformed("unsupported wire type")),
        };
        let payload_start = at;
        at = at
            .checked_add(len)
            .filter(|&end| end <= buf.len())
            .ok_or(RewriteError::Malformed("field runs past its message"))?;
        out.push(Field {
            number,
            wire,
            payload: &buf[payload_start..at],
            whole: &buf[start..at],
        });
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, number: u64, bytes: &[u8]) {
    put_varint(out, (number << 3) | LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The parts of a NodeProto the rewrite reads or changes; the rest is kept as encoded.
#[derive(Clone)]
struct Node {
    inputs: Vec<String>,
    outputs: Vec<String>,
    name: String,
    op_type: String,
    domain: String,
    /// Attributes and any other fields, encoded.
    rest: Vec<u8>,
}

impl Node {
    fn parse(buf: &[u8]) -> Result<Node> {
        let mut node = Node {
            inputs: Vec::new(),
            outputs: Vec::new(),
            name: String::new(),
            op_type: String::new(),
            domain: String::new(),
            rest: Vec::new(),
        };
        for f in fields(buf)? {
            let text = || {
                String::from_utf8(f.payload.to_vec())
                    .map_err(|_| RewriteError::Malformed("a node's string is not UTF-8"))
            };
            match (f.number, f.wire) {
                (NODE_INPUT, LEN) => node.inputs.push(text()?),
                (NODE_OUTPUT, LEN) => node.outputs.push(text()?),
                (NODE_NAME, LEN) => node.name = text()?,
                (NODE_OP_TYPE, LEN) => node.op_type = text()?,
                (NODE_DOMAIN, LEN) => node.domain = text()?,
                _ => node.rest.extend_from_slice(f.whole),
            }
        }
        Ok(node)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for input in &self.inputs {
            put_bytes(&mut out, NODE_INPUT, input.as_bytes());
        }
        for output in &self.outputs {
            put_bytes(&mut out, NODE_OUTPUT, output.as_bytes());
        }
        put_bytes(&mut out, NODE_NAME, self.name.as_bytes());
        put_bytes(&mut out, NODE_OP_TYPE, self.op_type.as_bytes());
        if !self.domain.is_empty() {
            put_bytes(&mut out, NODE_DOMAIN, self.domain.as_bytes());
        }
        out.extend_from_slice(&self.rest);
        out
    }

    /// Whether this is a standard `op` with `inputs` inputs and one output.
    fn is(&self, op: &str, inputs: usize) -> bool {
        self.op_type == op
            && (self.domain.is_empty() || self.domain == "ai.onnx")
            && self.inputs.len() == inputs
            && self.outputs.len() == 1
    }
}

/// A model split into the parts the rewrites read: the top-level fields, the graph's fields, its
/// nodes (parsed) and its stored tensors. Everything else is written back as it was.
struct Model<'a> {
    top: Vec<Field<'a>>,
    graph_at: usize,
    graph: Vec<Field<'a>>,
    nodes: Vec<Node>,
    stored: HashMap<String, Stored>,
    graph_outputs: Vec<String>,
    graph_inputs: Vec<String>,
    /// Every value name in use, so new ones do not collide.
    taken: HashSet<String>,
    /// Operator domains the rewritten nodes need, to import at version 1.
    domains: Vec<&'static str>,
}

/// A stored tensor (graph initializer).
struct Stored {
    dims: Vec<u64>,
    data_type: u64,
    /// The values of a small tensor (up to [`SMALL`] bytes) as little-endian bytes, for the
    /// constants a rewrite reads (a scale, a shape).
    small: Option<Vec<u8>>,
}

/// Largest stored tensor whose values are read, in bytes.
const SMALL: usize = 64;

const TENSOR_DIMS: u64 = 1;
const TENSOR_DATA_TYPE: u64 = 2;
const TENSOR_NAME: u64 = 8;
const TENSOR_DATA_LOCATION: u64 = 14;
const TENSOR_FLOAT_DATA: u64 = 4;
const TENSOR_INT64_DATA: u64 = 7;
const TENSOR_RAW_DATA: u64 = 9;
const FLOAT: u64 = 1;
const INT8: u64 = 3;
const INT32: u64 = 6;
const INT64: u64 = 7;

impl<'a> Model<'a> {
    /// `None` for models the rewrites leave alone: no graph, subgraphs (If, Loop, Scan may read
    /// any outer value), or tensors stored in files beside the model (they load only from that
    /// file).
    fn parse(model: &'a [u8]) -> Result<Option<Model<'a>>> {
        let top = fields(model)?;
        let Some(graph_at) = top
            .iter()
            .position(|f| f.number == MODEL_GRAPH && f.wire == LEN)
        else {
            return Ok(None);
        };
        let graph = fields(top[graph_at].payload)?;
        let mut nodes: Vec<Node> = Vec::new();
        for f in graph
            .iter()
            .filter(|f| f.number == GRAPH_NODE && f.wire == LEN)
        {
            nodes.push(Node::parse(f.payload)?);
        }
        if nodes.iter().any(|n| has_subgraph(&n.rest)) {
            return Ok(None);
        }
        let Some(stored) = stored_tensors(&graph)? else {
            return Ok(None);
        };
        let graph_outputs: Vec<String> = graph
            .iter()
            .filter(|f| f.number == GRAPH_OUTPUT && f.wire == LEN)
            .filter_map(|f| value_name(f.payload))
            .collect();
        let graph_inputs: Vec<String> = graph
            .iter()
            .filter(|f| f.number == GRAPH_INPUT && f.wire == LEN)
            .filter_map(|f| value_name(f.payload))
            .collect();
        let taken = nodes
            .iter()
            .flat_map(|n| n.inputs.iter().chain(&n.outputs).cloned())
            .chain(stored.keys().cloned())
            .chain(graph_outputs.iter().cloned())
            .collect();
        Ok(Some(Model {
            top,
            graph_at,
            graph,
            nodes,
            stored,
            graph_outputs,
            graph_inputs,
            taken,
            domains: Vec::new(),
        }))
    }

    /// The index of the node computing `name`.
    fn producer(&self, name: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.outputs.iter().any(|o| o == name))
    }

    /// Inputs of nodes reading `name`, plus one if the graph returns it.
    fn readers(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .map(|n| n.inputs.iter().filter(|i| *i == name).count())
            .sum::<usize>()
            + self.graph_outputs.iter().filter(|o| *o == name).count()
    }

    /// The stored tensor `name`, when no node computes a value of that name.
    fn stored(&self, name: &str) -> Option<&Stored> {
        self.stored
            .get(name)
            .filter(|_| self.producer(name).is_none())
    }

    /// The value of a stored `f32` tensor of one element.
    fn scalar_f32(&self, name: &str) -> Option<f32> {
        let stored = self.stored(name)?;
        let bytes = stored.small.as_deref()?;
        (stored.data_type == FLOAT && stored.dims.iter().all(|&d| d == 1) && bytes.len() == 4)
            .then(|| f32::from_le_bytes(bytes.try_into().expect("4 bytes")))
    }

    /// The values of a stored `int64` tensor of at most one dimension.
    fn ints(&self, name: &str) -> Option<Vec<i64>> {
        let stored = self.stored(name)?;
        let bytes = stored.small.as_deref()?;
        let count = match stored.dims[..] {
            [] => 1,
            [n] => n,
            _ => return None,
        };
        (stored.data_type == INT64 && count.checked_mul(8) == Some(bytes.len() as u64)).then(|| {
            bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect()
        })
    }

    /// A value name not yet in use, derived from `base`.
    fn fresh(&mut self, base: &str, what: &str) -> String {
        let mut name = format!("{base}__{what}");
        while self.taken.contains(&name) {
            name.push('_');
        }
        self.taken.insert(name.clone());
        name
    }

    /// The model with the current nodes and imported domains.
    fn encode(&self) -> Vec<u8> {
        let mut graph_bytes = Vec::with_capacity(self.top[self.graph_at].payload.len() + 256);
        let mut nodes_written = false;
        for f in &self.graph {
            if f.number == GRAPH_NODE && f.wire == LEN {
                // All nodes where the first one was (they are contiguous in practice; any other
                // fields between them keep their relative order after the nodes).
                if !nodes_written {
                    for node in &self.nodes {
                        put_bytes(&mut graph_bytes, GRAPH_NODE, &node.encode());
                    }
                    nodes_written = true;
                }
            } else {
                graph_bytes.extend_from_slice(f.whole);
            }
        }
        let imported: Vec<String> = self
            .top
            .iter()
            .filter(|f| f.number == MODEL_OPSET_IMPORT && f.wire == LEN)
            .filter_map(|f| value_name(f.payload))
            .collect();
        let mut out =
            Vec::with_capacity(self.top.iter().map(|f| f.whole.len()).sum::<usize>() + 256);
        for (i, f) in self.top.iter().enumerate() {
            if i == self.graph_at {
                put_bytes(&mut out, MODEL_GRAPH, &graph_bytes);
            } else {
                out.extend_from_slice(f.whole);
            }
        }
        for domain in self
            .domains
            .iter()
            .filter(|d| !imported.iter().any(|i| i == *d))
        {
            // OperatorSetIdProto: domain = 1, version = 2.
            let mut opset = Vec::new();
            put_bytes(&mut opset, 1, domain.as_bytes());
            put_varint(&mut opset, 2 << 3);
            put_varint(&mut opset, 1);
            put_bytes(&mut out, MODEL_OPSET_IMPORT, &opset);
        }
        out
    }
}

/// The model with each `Gather(Mul(Cast(codes), scale), ids)` on the table's first axis turned
/// into `Mul(Cast(Gather(codes, ids)), Gather(scale, ids))`, or `None` when it has no such lookup.
/// Rewritten only when that computes the same values: codes and scale are stored tensors (graph
/// initializers), the scale has one value per row (`[rows, 1, ..]`, so fetching its rows with the
/// same ids lines them up), the dequantized table is read by that lookup alone (not by another
/// node, a graph output or a subgraph), and the lookup fetches along the first axis.
pub fn gather_before_dequantize(model: &[u8]) -> Result<Option<Vec<u8>>> {
    let Some(mut m) = Model::parse(model)? else {
        return Ok(None);
    };
    let mut changed = false;
    loop {
        // Find one lookup of the pattern in the current node list.
        let found = m.nodes.iter().enumerate().find_map(|(g, gather)| {
            if !gather.is("Gather", 2) || !axis_is_zero(&gather.rest) {
                return None;
            }
            let (mul_at, cast_at) = dequantized(&m, &gather.inputs[0])?;
            let (mul, cast) = (&m.nodes[mul_at], &m.nodes[cast_at]);
            let codes = m.stored(&cast.inputs[0])?;
            let scale = m.stored(&mul.inputs[1])?;
            let per_row = !codes.dims.is_empty()
                && scale.dims.len() == codes.dims.len()
                && scale.dims[0] == codes.dims[0]
                && scale.dims[1..].iter().all(|&d| d == 1);
            per_row.then_some((g, mul_at, cast_at))
        });
        let Some((g, mul_at, cast_at)) = found else {
            break;
        };
        let gather = m.nodes[g].clone();
        let (codes, ids) = (m.nodes[cast_at].inputs[0].clone(), gather.inputs[1].clone());
        let scale = m.nodes[mul_at].inputs[1].clone();
        let base = gather.outputs[0].clone();
        let fetched = m.fresh(&base, "codes");
        let unpacked = m.fresh(&base, "codes_f");
        let scales = m.fresh(&base, "scales");
        // The lookup itself (same attributes) on another table.
        let mut fetch = |table: String, output: &str, what: &str| Node {
            inputs: vec![table, ids.clone()],
            outputs: vec![output.to_owned()],
            name: m.fresh(&base, what),
            ..gather.clone()
        };
        let gather_codes = fetch(codes, &fetched, "gather_codes");
        let gather_scales = fetch(scale, &scales, "gather_scales");
        let mut cast = m.nodes[cast_at].clone();
        cast.inputs = vec![fetched];
        // A new name: any shape recorded for the old one (the whole table) no longer holds.
        cast.outputs = vec![unpacked.clone()];
        let mut mul = m.nodes[mul_at].clone();
        mul.inputs = vec![unpacked, scales];
        mul.outputs = gather.outputs.clone();
        // In the lookup's place (after everything its inputs need, before everything that
        // reads its output), so the node list stays in topological order.
        replace(
            &mut m,
            g,
            [gather_codes, gather_scales, cast, mul],
            [mul_at, cast_at],
        );
        changed = true;
    }
    Ok(changed.then(|| m.encode()))
}

/// The model with each `MatMul(x, Mul(Cast(codes), scale))` on a stored 8-bit weight matrix
/// turned into ONNX Runtime's `DynamicQuantizeMatMul(x, codes, scale)`, or `None` when it has
/// none. That multiplies 8-bit integers (`x` is quantized per call, with one scale for the whole
/// tensor) instead of reading the weights unpacked to `f32`, so values change slightly (cosine
/// ≈ 0.99 between the vectors) and a text's vector depends on the other texts of its batch:
/// only for single queries, never for stored vectors. Rewritten when the codes are a stored
/// `int8` matrix `[k, n]`, the scale a stored `f32` tensor of one value (`[]`, `[1]`) or one per
/// column (`[n]`, `[1, n]`: shapes the operator takes as they are), the `Cast` makes `f32`, and
/// nothing else reads the dequantized matrix.
pub fn integer_matmuls(model: &[u8]) -> Result<Option<Vec<u8>>> {
    let Some(mut m) = Model::parse(model)? else {
        return Ok(None);
    };
    let mut changed = false;
    loop {
        let found = m.nodes.iter().enumerate().find_map(|(at, matmul)| {
            if !matmul.is("MatMul", 2) {
                return None;
            }
            let (mul_at, cast_at) = dequantized(&m, &matmul.inputs[1])?;
            let (mul, cast) = (&m.nodes[mul_at], &m.nodes[cast_at]);
            if int_attribute(&cast.rest, "to") != Some(Some(FLOAT)) {
                return None;
            }
            let codes = m.stored(&cast.inputs[0])?;
            let scale = m.stored(&mul.inputs[1])?;
            let [_, n] = codes.dims[..] else {
                return None;
            };
            let scale_fits = match scale.dims[..] {
                [] | [1] => true,
                [c] | [1, c] => c == n,
                _ => false,
            };
            let fits = codes.data_type == INT8 && scale.data_type == FLOAT && scale_fits;
            fits.then_some((at, mul_at, cast_at))
        });
        let Some((at, mul_at, cast_at)) = found else {
            break;
        };
        let codes = m.nodes[cast_at].inputs[0].clone();
        let scale = m.nodes[mul_at].inputs[1].clone();
        let matmul = m.nodes[at].clone();
        let integer = Node {
            inputs: vec![matmul.inputs[0].clone(), codes, scale],
            outputs: matmul.outputs.clone(),
            name: m.fresh(&matmul.name, "integer"),
            op_type: "DynamicQuantizeMatMul".into(),
            domain: MICROSOFT.into(),
            rest: Vec::new(),
        };
        replace(&mut m, at, [integer], [mul_at, cast_at]);
        if !m.domains.contains(&MICROSOFT) {
            m.domains.push(MICROSOFT);
        }
        changed = true;
    }
    Ok(changed.then(|| m.encode()))
}

/// ONNX Runtime's own operators.
const MICROSOFT: &str = "com.microsoft";

/// The model with each GELU written out as `x * 0.5 * (1 + erf(x / sqrt 2))` (the exporter's
/// `Mul(x, Mul(0.5, Add(Erf(Div(x, sqrt 2)), 1)))`, operands in either order) turned into ONNX
/// Runtime's `Gelu(x)`, which computes the same formula in one kernel; or `None` when it has none.
pub fn fused_gelu(model: &[u8]) -> Result<Option<Vec<u8>>> {
    let Some(mut m) = Model::parse(model)? else {
        return Ok(None);
    };
    let mut changed = false;
    loop {
        let found = (0..m.nodes.len()).find_map(|at| gelu(&m, at));
        let Some((at, x, dropped)) = found else {
            break;
        };
        let outputs = m.nodes[at].outputs.clone();
        let node = Node {
            inputs: vec![x],
            name: m.fresh(&outputs[0], "gelu"),
            outputs,
            op_type: "Gelu".into(),
            domain: MICROSOFT.into(),
            rest: Vec::new(),
        };
        replace(&mut m, at, [node], dropped);
        if !m.domains.contains(&MICROSOFT) {
            m.domains.push(MICROSOFT);
        }
        changed = true;
    }
    Ok(changed.then(|| m.encode()))
}

/// `(at, x, [the inner nodes])` when node `at` ends a GELU of `x` as [`fused_gelu`] describes,
/// each inner value read once.
fn gelu(m: &Model, at: usize) -> Option<(usize, String, [usize; 4])> {
    let outer = &m.nodes[at];
    if !outer.is("Mul", 2) {
        return None;
    }
    let near = |value: &str, expected: f32| {
        m.scalar_f32(value)
            .is_some_and(|v| (v - expected).abs() <= 1e-6 * expected.abs())
    };
    // One operand of a two-input node produced by a standard `op` read only there, and the other.
    let split = |node: &Node, op: &str, inputs: usize| -> Option<(usize, String)> {
        [(0, 1), (1, 0)].iter().find_map(|&(a, b)| {
            let p = m.producer(&node.inputs[a])?;
            (m.nodes[p].is(op, inputs) && m.readers(&node.inputs[a]) == 1)
                .then(|| (p, node.inputs[b].clone()))
        })
    };
    let (inner_at, x) = split(outer, "Mul", 2)?;
    let (add_at, half) = split(&m.nodes[inner_at], "Add", 2)?;
    let (erf_at, one) = split(&m.nodes[add_at], "Erf", 1)?;
    let div_at = m.producer(&m.nodes[erf_at].inputs[0])?;
    let div = &m.nodes[div_at];
    let fits = near(&half, 0.5)
        && near(&one, 1.0)
        && div.is("Div", 2)
        && m.readers(&div.outputs[0]) == 1
        && div.inputs[0] == x
        && near(&div.inputs[1], std::f32::consts::SQRT_2);
    fits.then_some((at, x, [inner_at, add_at, erf_at, div_at]))
}

/// How many nodes of each of `ops` the model has (0 for a model the rewrites cannot read), so
/// the embedder can tell that a fusion found the same blocks in two variants of a model.
pub fn operator_counts(model: &[u8], ops: &[&str]) -> Result<Vec<usize>> {
    let Some(m) = Model::parse(model)? else {
        return Ok(vec![0; ops.len()]);
    };
    Ok(ops
        .iter()
        .map(|op| m.nodes.iter().filter(|n| n.op_type == *op).count())
        .collect())
}

/// The graph input holding each text's attention mask (1 for a token, 0 for padding).
const ATTENTION_MASK: &str = "attention_mask";

/// One self-attention block found by [`fused_attention`].
struct Attention {
    /// Projections of the hidden states, `[batch, tokens, hidden]` each.
    query: String,
    key: String,
    value: String,
    heads: u64,
    scale: f32,
    /// The node computing the block's result (`[batch, tokens, hidden]`), and every node of the
    /// block before it.
    last: usize,
    inner: Vec<usize>,
}

/// The model with each self-attention block written out in standard operators (split into
/// heads, scaled products, a mask added, softmax, a product with the values, heads joined)
/// turned into one ONNX Runtime `MultiHeadAttention` reading the same query, key and value
/// projections and the graph's `attention_mask` as the keys' padding mask; or `None` when it
/// has no such block. A query's embedding runs ~25 nodes per layer as one kernel, and the mask
/// arithmetic they shared is left unused and dropped.
///
/// The pattern is matched on the operators and their wiring (the heads' split and join, a
/// softmax over the last axis, the scales as stored constants); what the dropped mask arithmetic
/// computed is not proven equal to a padding mask here, so the caller compares the rewritten
/// model's outputs with the original's on a padded batch before using it.
pub fn fused_attention(model: &[u8]) -> Result<Option<Vec<u8>>> {
    let Some(mut m) = Model::parse(model)? else {
        return Ok(None);
    };
    if !m.graph_inputs.iter().any(|i| i == ATTENTION_MASK) {
        return Ok(None);
    }
    let blocks: Vec<Attention> = (0..m.nodes.len())
        .filter_map(|at| attention_block(&m, at))
        .collect();
    // Blocks must not share nodes (each is replaced whole).
    let mut seen = HashSet::new();
    if blocks.is_empty()
        || !blocks
            .iter()
            .flat_map(|b| b.inner.iter().chain([&b.last]))
            .all(|&i| seen.insert(i))
    {
        return Ok(None);
    }
    let mask = m.fresh(ATTENTION_MASK, "int32");
    let cast = Node {
        inputs: vec![ATTENTION_MASK.into()],
        outputs: vec![mask.clone()],
        name: m.fresh(ATTENTION_MASK, "cast"),
        op_type: "Cast".into(),
        domain: String::new(),
        rest: int_attribute_bytes("to", INT32 as i64),
    };
    let mut fused: HashMap<usize, Node> = HashMap::new();
    for block in &blocks {
        let outputs = m.nodes[block.last].outputs.clone();
        let mut rest = int_attribute_bytes("num_heads", block.heads as i64);
        rest.extend(float_attribute_bytes("scale", block.scale));
        let node = Node {
            inputs: vec![
                block.query.clone(),
                block.key.clone(),
                block.value.clone(),
                String::new(),
                mask.clone(),
            ],
            name: m.fresh(&outputs[0], "attention"),
            outputs,
            op_type: "MultiHeadAttention".into(),
            domain: MICROSOFT.into(),
            rest,
        };
        fused.insert(block.last, node);
    }
    let dropped: HashSet<usize> = blocks.iter().flat_map(|b| b.inner.clone()).collect();
    let removed: HashSet<String> = dropped
        .iter()
        .flat_map(|&i| m.nodes[i].outputs.clone())
        .collect();
    let nodes = std::mem::take(&mut m.nodes);
    // The cast reads a graph input only, so it may come first.
    m.nodes = std::iter::once(cast)
        .chain(
            nodes
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !dropped.contains(i))
                .map(|(i, node)| fused.remove(&i).unwrap_or(node)),
        )
        .collect();
    drop_unused(&mut m);
    // Values of a block may be read outside it only by what fusing left unused (the shapes its
    // own reshapes were computed from); anything else still reading one means the block was not
    // self-contained, and the model is left as it is.
    let still_read = m
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter())
        .chain(m.graph_outputs.iter())
        .any(|v| removed.contains(v));
    if still_read {
        return Ok(None);
    }
    if !m.domains.contains(&MICROSOFT) {
        m.domains.push(MICROSOFT);
    }
    Ok(Some(m.encode()))
}

/// The attention block whose softmax is node `at`, if it has the shape [`fused_attention`]
/// rewrites.
fn attention_block(m: &Model, at: usize) -> Option<Attention> {
    let softmax = &m.nodes[at];
    if !softmax.is("Softmax", 1)
        || !matches!(
            signed(int_attribute(&softmax.rest, "axis")?),
            Some(-1) | Some(3)
        )
    {
        return None;
    }
    let mut inner = vec![at];
    // Scores plus the mask: Add(MatMul(q, k^T), mask), in either order.
    let add_at = m.producer(&softmax.inputs[0])?;
    let add = &m.nodes[add_at];
    if !add.is("Add", 2) {
        return None;
    }
    inner.push(add_at);
    let scores_at = add
        .inputs
        .iter()
        .filter_map(|i| m.producer(i))
        .find(|&p| m.nodes[p].is("MatMul", 2))?;
    inner.push(scores_at);
    // What is added to the scores may depend on the attention mask's values and on shapes alone
    // (a padding mask; the comparison of outputs catches the rest, such as a causal mask).
    let mask = add
        .inputs
        .iter()
        .find(|i| **i != m.nodes[scores_at].outputs[0])?;
    if !mask_only(m, mask) {
        return None;
    }
    let scores = &m.nodes[scores_at];
    let (query4, query_scale) = scaled(m, &scores.inputs[0], &mut inner)?;
    let (key_t, key_scale) = scaled(m, &scores.inputs[1], &mut inner)?;
    let (query, _) = split_heads(m, &query4, &mut inner)?;
    // The keys, transposed for the product: any chain of reshapes and transposes from the
    // projection (the exporter's varies).
    let mut value = key_t;
    let key = loop {
        let Some(p) = m.producer(&value) else {
            break value;
        };
        let node = &m.nodes[p];
        if !(node.is("Reshape", 2) || node.is("Transpose", 1)) {
            break value;
        }
        inner.push(p);
        value = node.inputs[0].clone();
    };
    // The softmax's result, or that with NaN (a row of masked keys only) set to 0.
    let mut probabilities = softmax.outputs[0].clone();
    if m.readers(&probabilities) == 2 {
        let isnan_at = m
            .nodes
            .iter()
            .position(|n| n.is("IsNaN", 1) && n.inputs[0] == probabilities)?;
        let where_at = only_reader(m, &m.nodes[isnan_at].outputs[0], "Where", 3)?;
        let select = &m.nodes[where_at];
        if select.inputs[0] != m.nodes[isnan_at].outputs[0]
            || m.scalar_f32(&select.inputs[1]) != Some(0.0)
            || select.inputs[2] != probabilities
        {
            return None;
        }
        inner.extend([isnan_at, where_at]);
        probabilities = select.outputs[0].clone();
    }
    let context_at = only_reader(m, &probabilities, "MatMul", 2)?;
    let context = &m.nodes[context_at];
    if context.inputs[0] != probabilities {
        return None;
    }
    inner.push(context_at);
    let (value_proj, value_split) = split_heads(m, &context.inputs[1], &mut inner)?;
    // Heads joined: Reshape(Transpose(context, [0, 2, 1, 3]), [batch, tokens, hidden]).
    let join_at = only_reader(m, &context.outputs[0], "Transpose", 1)?;
    if perm(&m.nodes[join_at]) != Some(vec![0, 2, 1, 3]) {
        return None;
    }
    inner.push(join_at);
    let last = only_reader(m, &m.nodes[join_at].outputs[0], "Reshape", 2)?;
    if m.nodes[last].inputs[0] != m.nodes[join_at].outputs[0] {
        return None;
    }
    let heads = heads(m, value_split)?;
    Some(Attention {
        query,
        key,
        value: value_proj,
        heads,
        scale: query_scale * key_scale,
        last,
        inner,
    })
}

/// Whether `value` is computed from the values of the graph input `attention_mask`, stored
/// tensors and the shapes (not the values) of anything else.
fn mask_only(m: &Model, value: &str) -> bool {
    let mut pending = vec![value.to_owned()];
    let mut seen = HashSet::new();
    while let Some(v) = pending.pop() {
        if v.is_empty() || v == ATTENTION_MASK || m.stored(&v).is_some() || !seen.insert(v.clone())
        {
            continue;
        }
        let Some(p) = m.producer(&v) else {
            // Another graph input's values.
            return false;
        };
        let node = &m.nodes[p];
        if node.op_type != "Shape" {
            pending.extend(node.inputs.iter().cloned());
        }
    }
    true
}

/// `(x, c)` when `value` is `Mul(x, c)` with `c` a stored `f32` scalar, else `(value, 1)`.
fn scaled(m: &Model, value: &str, inner: &mut Vec<usize>) -> Option<(String, f32)> {
    if let Some(p) = m.producer(value).filter(|&p| m.nodes[p].is("Mul", 2)) {
        let mul = &m.nodes[p];
        for (x, c) in [(0, 1), (1, 0)] {
            if let Some(scale) = m.scalar_f32(&mul.inputs[c]) {
                inner.push(p);
                return Some((mul.inputs[x].clone(), scale));
            }
        }
        return None;
    }
    Some((value.to_owned(), 1.0))
}

/// The projection `p` and the Reshape's index when `value` is `Transpose(Reshape(p, [batch,
/// tokens, heads, size]), [0, 2, 1, 3])`.
fn split_heads(m: &Model, value: &str, inner: &mut Vec<usize>) -> Option<(String, usize)> {
    let transpose_at = m.producer(value)?;
    let transpose = &m.nodes[transpose_at];
    if !transpose.is("Transpose", 1) || perm(transpose) != Some(vec![0, 2, 1, 3]) {
        return None;
    }
    let reshape_at = m.producer(&transpose.inputs[0])?;
    let reshape = &m.nodes[reshape_at];
    if !reshape.is("Reshape", 2) {
        return None;
    }
    inner.extend([transpose_at, reshape_at]);
    Some((reshape.inputs[0].clone(), reshape_at))
}

/// How many heads the Reshape at `split` splits its projection into: from its target shape
/// (`[batch, tokens, heads, size]`, with one of heads and size stored as a constant, the other
/// possibly -1) and the projection's width.
fn heads(m: &Model, split: usize) -> Option<u64> {
    let reshape = &m.nodes[split];
    let projection = &reshape.inputs[0];
    let shape = &reshape.inputs[1];
    let dims: Vec<Option<i64>> = match m.ints(shape) {
        Some(dims) => dims.into_iter().map(Some).collect(),
        None => {
            // Computed: Concat of one-value pieces.
            let concat = &m.nodes[m.producer(shape)?];
            if concat.op_type != "Concat" {
                return None;
            }
            concat
                .inputs
                .iter()
                .map(|piece| m.ints(piece).filter(|v| v.len() == 1).map(|v| v[0]))
                .collect()
        }
    };
    let [_, _, heads, size] = dims[..] else {
        return None;
    };
    match (heads, size) {
        (Some(h), _) if h > 0 => Some(h as u64),
        (_, Some(size)) if size > 0 => {
            let width = width(m, projection)?;
            (width % size as u64 == 0).then(|| width / size as u64)
        }
        _ => None,
    }
}

/// The last dimension of a projection: of its stored bias (`Add(x, bias[n])`) or weight matrix
/// (`[k, n]`).
fn width(m: &Model, value: &str) -> Option<u64> {
    let node = &m.nodes[m.producer(value)?];
    node.inputs.iter().find_map(|i| {
        let stored = m.stored(i)?;
        match (node.op_type.as_str(), &stored.dims[..]) {
            ("Add", [n]) => Some(*n),
            ("MatMul" | "DynamicQuantizeMatMul", [_, n]) => Some(*n),
            _ => None,
        }
    })
}

/// The one node reading `value`, when it is a standard `op` of `inputs` inputs and one output and
/// nothing else reads it.
fn only_reader(m: &Model, value: &str, op: &str, inputs: usize) -> Option<usize> {
    if m.readers(value) != 1 {
        return None;
    }
    let at = m
        .nodes
        .iter()
        .position(|n| n.inputs.iter().any(|i| i == value))?;
    m.nodes[at].is(op, inputs).then_some(at)
}

/// A Transpose's `perm`.
fn perm(node: &Node) -> Option<Vec<i64>> {
    ints_attribute(&node.rest, "perm")
}

/// Drops nodes none of whose outputs is read or returned, until none is left.
fn drop_unused(m: &mut Model) {
    loop {
        let read: HashSet<&String> = m
            .nodes
            .iter()
            .flat_map(|n| n.inputs.iter())
            .chain(m.graph_outputs.iter())
            .collect();
        let unused: Vec<usize> = (0..m.nodes.len())
            .filter(|&i| m.nodes[i].outputs.iter().all(|o| !read.contains(o)))
            .collect();
        if unused.is_empty() {
            return;
        }
        let mut at = 0;
        m.nodes.retain(|_| {
            at += 1;
            !unused.contains(&(at - 1))
        });
    }
}

/// An encoded integer attribute (NodeProto field 5).
fn int_attribute_bytes(name: &str, value: i64) -> Vec<u8> {
    let mut attribute = Vec::new();
    put_bytes(&mut attribute, 1, name.as_bytes());
    put_varint(&mut attribute, 3 << 3); // i
    put_varint(&mut attribute, value as u64);
    put_varint(&mut attribute, 20 << 3); // type = INT
    put_varint(&mut attribute, 2);
    let mut out = Vec::new();
    put_bytes(&mut out, NODE_ATTRIBUTE, &attribute);
    out
}

/// An encoded float attribute (NodeProto field 5).
fn float_attribute_bytes(name: &str, value: f32) -> Vec<u8> {
    let mut attribute = Vec::new();
    put_bytes(&mut attribute, 1, name.as_bytes());
    put_varint(&mut attribute, (2 << 3) | 5); // f, fixed32
    attribute.extend_from_slice(&value.to_le_bytes());
    put_varint(&mut attribute, 20 << 3); // type = FLOAT
    put_varint(&mut attribute, 1);
    let mut out = Vec::new();
    put_bytes(&mut out, NODE_ATTRIBUTE, &attribute);
    out
}

/// An attribute's varint read as the signed integer it encodes.
fn signed(value: Option<u64>) -> Option<i64> {
    value.map(|v| v as i64)
}

/// `(mul, cast)` when `value` is `Mul(Cast(codes), scale)` and each of the two results is read
/// once (by the caller's node).
fn dequantized(m: &Model, value: &str) -> Option<(usize, usize)> {
    let mul_at = m.producer(value)?;
    let mul = &m.nodes[mul_at];
    if !mul.is("Mul", 2) || m.readers(&mul.outputs[0]) != 1 {
        return None;
    }
    let cast_at = m.producer(&mul.inputs[0])?;
    let cast = &m.nodes[cast_at];
    if !cast.is("Cast", 1) || m.readers(&cast.outputs[0]) != 1 {
        return None;
    }
    Some((mul_at, cast_at))
}

/// Puts `replacement` where node `at` was and drops the nodes at `dropped`.
fn replace<const N: usize, const D: usize>(
    m: &mut Model,
    at: usize,
    replacement: [Node; N],
    dropped: [usize; D],
) {
    let nodes = std::mem::take(&mut m.nodes);
    let mut rebuilt = Vec::with_capacity(nodes.len() + N);
    for (i, node) in nodes.into_iter().enumerate() {
        if i == at {
            rebuilt.extend(replacement.iter().cloned());
        } else if !dropped.contains(&i) {
            rebuilt.push(node);
        }
    }
    m.nodes = rebuilt;
}

/// Name → dims, type and (for small ones) values of the graph's stored tensors, or `None` if any
/// is stored outside the model file (`data_location` EXTERNAL).
fn stored_tensors(graph: &[Field]) -> Result<Option<HashMap<String, Stored>>> {
    let mut stored = HashMap::new();
    for f in graph
        .iter()
        .filter(|f| f.number == GRAPH_INITIALIZER && f.wire == LEN)
    {
        let mut name = None;
        let mut dims = Vec::new();
        let mut data_type = 0;
        let mut values = Vec::new();
        // Values are copied only while the tensor stays small: not the weights.
        let mut large = false;
        let mut keep = |values: &mut Vec<u8>, bytes: &[u8]| {
            if large || values.len() + bytes.len() > SMALL {
                large = true;
                values.clear();
            } else {
                values.extend_from_slice(bytes);
            }
        };
        for t in fields(f.payload)? {
            match (t.number, t.wire) {
                (TENSOR_NAME, LEN) => name = String::from_utf8(t.payload.to_vec()).ok(),
                (TENSOR_RAW_DATA, LEN) => keep(&mut values, t.payload),
                // Packed repeated float (fixed32, little-endian as raw data is).
                (TENSOR_FLOAT_DATA, LEN) => keep(&mut values, t.payload),
                (TENSOR_FLOAT_DATA, 5) => keep(&mut values, &t.whole[t.whole.len() - 4..]),
                // Packed repeated int64 (varints, each at least one byte).
                (TENSOR_INT64_DATA, LEN) if t.payload.len() <= SMALL => {
                    let mut at = 0;
                    while at < t.payload.len() {
                        keep(&mut values, &varint(t.payload, &mut at)?.to_le_bytes());
                    }
                }
                (TENSOR_INT64_DATA, LEN) => keep(&mut values, &[0; SMALL + 1]),
                (TENSOR_INT64_DATA, 0) => {
                    keep(&mut values, &varint_value(&t).unwrap_or(0).to_le_bytes())
                }
                (TENSOR_DATA_LOCATION, 0) if varint_value(&t) == Some(1) => return Ok(None),
                (TENSOR_DATA_TYPE, 0) => data_type = varint_value(&t).unwrap_or(0),
                (TENSOR_DIMS, 0) => dims.extend(varint_value(&t)),
                // Packed repeated int64.
                (TENSOR_DIMS, LEN) => {
                    let mut at = 0;
                    while at < t.payload.len() {
                        dims.push(varint(t.payload, &mut at)?);
                    }
                }
                _ => {}
            }
        }
        if let Some(name) = name {
            let small = (!large).then_some(values);
            stored.insert(
                name,
                Stored {
                    dims,
                    data_type,
                    small,
                },
            );
        }
    }
    Ok(Some(stored))
}

/// The `name` (field 1) of a ValueInfoProto.
fn value_name(payload: &[u8]) -> Option<String> {
    fields(payload)
        .ok()?
        .iter()
        .find(|f| f.number == 1 && f.wire == LEN)
        .and_then(|f| String::from_utf8(f.payload.to_vec()).ok())
}

/// Whether a node's encoded attributes hold a graph (AttributeProto `g` = 6, `graphs` = 11).
fn has_subgraph(rest: &[u8]) -> bool {
    let Ok(node_fields) = fields(rest) else {
        return true;
    };
    node_fields
        .iter()
        .filter(|f| f.number == NODE_ATTRIBUTE && f.wire == LEN)
        .any(|f| match fields(f.payload) {
            Ok(attribute) => attribute.iter().any(|a| a.number == 6 || a.number == 11),
            Err(_) => true,
        })
}

/// Whether a Gather's encoded attributes leave `axis` at 0 (absent, or set to 0).
fn axis_is_zero(rest: &[u8]) -> bool {
    matches!(int_attribute(rest, "axis"), Some(None | Some(0)))
}

/// The integer attribute `name` of a node's encoded fields: `Some(None)` when it is absent,
/// `None` when the attributes cannot be read.
fn int_attribute(rest: &[u8], name: &str) -> Option<Option<u64>> {
    const ATTRIBUTE_NAME: u64 = 1;
    const ATTRIBUTE_INT: u64 = 3;
    for f in fields(rest)
        .ok()?
        .iter()
        .filter(|f| f.number == NODE_ATTRIBUTE && f.wire == LEN)
    {
        let attribute = fields(f.payload).ok()?;
        if attribute
            .iter()
            .any(|a| a.number == ATTRIBUTE_NAME && a.payload == name.as_bytes())
        {
            // Absent from an attribute that is there: the default, 0 (proto3 writers omit it).
            return match attribute
                .iter()
                .find(|a| a.number == ATTRIBUTE_INT && a.wire == 0)
            {
                Some(value) => Some(Some(varint_value(value)?)),
                None => Some(Some(0)),
            };
        }
    }
    Some(None)
}

/// The integer-list attribute `name` (AttributeProto `ints` = 8, packed or not), `None` when it
/// is absent or cannot be read.
fn ints_attribute(rest: &[u8], name: &str) -> Option<Vec<i64>> {
    for f in fields(rest)
        .ok()?
        .iter()
        .filter(|f| f.number == NODE_ATTRIBUTE && f.wire == LEN)
    {
        let attribute = fields(f.payload).ok()?;
        if !attribute
            .iter()
            .any(|a| a.number == 1 && a.payload == name.as_bytes())
        {
            continue;
        }
        let mut values = Vec::new();
        for a in attribute.iter().filter(|a| a.number == 8) {
            match a.wire {
                0 => values.push(varint_value(a)? as i64),
                LEN => {
                    let mut at = 0;
                    while at < a.payload.len() {
                        values.push(varint(a.payload, &mut at).ok()? as i64);
                    }
                }
                _ => return None,
            }
        }
        return Some(values);
    }
    None
}

/// The value of a varint field.
fn varint_value(field: &Field) -> Option<u64> {
    let mut at = 0;
    varint(field.whole, &mut at).ok()?;
    varint(field.whole, &mut at).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> Node {
        Node {
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            name: format!("{op}_{}", outputs[0]),
            op_type: op.into(),
            domain: String::new(),
            rest: Vec::new(),
        }
    }

    /// A model of `nodes`, with stored tensors of these names and dims, returning `outputs`.
    fn model(nodes: &[Node], stored: &[(&str, &[u64])], outputs: &[&str]) -> Vec<u8> {
        let typed: Vec<(&str, &[u64], u64)> = stored.iter().map(|&(n, d)| (n, d, INT8)).collect();
        typed_model(nodes, &typed, outputs)
    }

    /// The same with each stored tensor's data type, and 4 bytes of data each.
    fn typed_model(nodes: &[Node], stored: &[(&str, &[u64], u64)], outputs: &[&str]) -> Vec<u8> {
        let mut graph = Vec::new();
        for n in nodes {
            put_bytes(&mut graph, GRAPH_NODE, &n.encode());
        }
        put_bytes(&mut graph, 2, b"graph-name");
        for (name, dims, data_type) in stored {
            let mut tensor = Vec::new();
            for &d in *dims {
                put_varint(&mut tensor, 1 << 3); // dims, unpacked
                put_varint(&mut tensor, d);
            }
            put_varint(&mut tensor, TENSOR_DATA_TYPE << 3);
            put_varint(&mut tensor, *data_type);
            put_bytes(&mut tensor, 8, name.as_bytes());
            put_bytes(&mut tensor, 9, b"data"); // raw_data
            put_bytes(&mut graph, GRAPH_INITIALIZER, &tensor);
        }
        for output in outputs {
            let mut value = Vec::new();
            put_bytes(&mut value, 1, output.as_bytes());
            put_bytes(&mut graph, GRAPH_OUTPUT, &value);
        }
        let mut out = Vec::new();
        put_varint(&mut out, 1 << 3); // ir_version
        put_varint(&mut out, 10);
        put_bytes(&mut out, MODEL_GRAPH, &graph);
        out
    }

    fn nodes_of(model: &[u8]) -> Vec<Node> {
        let top = fields(model).unwrap();
        let graph = top.iter().find(|f| f.number == MODEL_GRAPH).unwrap();
        fields(graph.payload)
            .unwrap()
            .iter()
            .filter(|f| f.number == GRAPH_NODE)
            .map(|f| Node::parse(f.payload).unwrap())
            .collect()
    }

    fn lookup() -> Vec<Node> {
        vec![
            node("Cast", &["table_q"], &["table_f"]),
            node("Mul", &["table_f", "table_scale"], &["table"]),
            node("Gather", &["table", "ids"], &["embedding"]),
            node("Add", &["embedding", "bias"], &["out"]),
        ]
    }

    #[test]
    fn a_lookup_in_a_table_scaled_per_row_fetches_codes_then_scales_them() {
        let original = model(
            &lookup(),
            &[("table_q", &[100, 8]), ("table_scale", &[100, 1])],
            &["out"],
        );
        let rewritten = gather_before_dequantize(&original)
            .unwrap()
            .expect("rewritten");
        let nodes = nodes_of(&rewritten);
        let ops: Vec<&str> = nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Gather", "Gather", "Cast", "Mul", "Add"]);
        assert_eq!(nodes[0].inputs, ["table_q", "ids"]);
        assert_eq!(nodes[1].inputs, ["table_scale", "ids"]);
        assert_eq!(nodes[2].inputs, [nodes[0].outputs[0].clone()]);
        assert_ne!(
            nodes[2].outputs,
            ["table_f"],
            "the cast's output is renamed"
        );
        assert_eq!(
            nodes[3].inputs,
            [nodes[2].outputs[0].clone(), nodes[1].outputs[0].clone()]
        );
        assert_eq!(nodes[3].outputs, ["embedding"]);
        // An `axis` attribute without a value is the default, 0 (proto3 writers omit it).
        let mut nodes = lookup();
        let mut attribute = Vec::new();
        put_bytes(&mut attribute, 1, b"axis");
        put_bytes(&mut nodes[2].rest, NODE_ATTRIBUTE, &attribute);
        let unset = model(
            &nodes,
            &[("table_q", &[100, 8]), ("table_scale", &[100, 1])],
            &["out"],
        );
        assert!(gather_before_dequantize(&unset).unwrap().is_some());
        // Fields other than the graph's nodes are kept.
        assert!(rewritten.windows(10).any(|w| w == b"graph-name"));
        assert_eq!(
            fields(&rewritten).unwrap()[0].whole,
            fields(&original).unwrap()[0].whole
        );
    }

    #[test]
    fn anything_that_would_compute_other_values_is_left_alone() {
        let per_row: &[(&str, &[u64])] = &[("table_q", &[100, 8]), ("table_scale", &[100, 1])];
        // One scale for the whole table, or one per column: fetching rows of it is wrong.
        for scale in [&[][..], &[1, 8][..], &[8][..], &[1][..]] {
            let m = model(
                &lookup(),
                &[("table_q", &[100, 8]), ("table_scale", scale)],
                &["out"],
            );
            assert!(gather_before_dequantize(&m).unwrap().is_none(), "{scale:?}");
        }
        // The dequantized table is read again, or returned.
        let mut shared = lookup();
        shared.push(node("MatMul", &["x", "table"], &["logits"]));
        assert!(gather_before_dequantize(&model(&shared, per_row, &["out"]))
            .unwrap()
            .is_none());
        assert!(
            gather_before_dequantize(&model(&lookup(), per_row, &["out", "table"]))
                .unwrap()
                .is_none()
        );
        // The codes are computed, not stored.
        let mut computed = lookup();
        computed.insert(0, node("Relu", &["raw"], &["table_q"]));
        assert!(gather_before_dequantize(&model(
            &computed,
            &[("table_scale", &[100, 1])],
            &["out"]
        ))
        .unwrap()
        .is_none());
        assert!(gather_before_dequantize(b"\x0f\xff").is_err());
    }

    /// `node` with the integer attribute `name` = `value`.
    fn with_int(mut node: Node, name: &str, value: u64) -> Node {
        let mut attribute = Vec::new();
        put_bytes(&mut attribute, 1, name.as_bytes());
        put_varint(&mut attribute, 3 << 3); // i
        put_varint(&mut attribute, value);
        put_varint(&mut attribute, 20 << 3); // type = INT
        put_varint(&mut attribute, 2);
        put_bytes(&mut node.rest, NODE_ATTRIBUTE, &attribute);
        node
    }

    /// `x` is computed between the dequantization and the product, so a replacement put where
    /// the `Cast` or `Mul` was would read it before it exists.
    fn product() -> Vec<Node> {
        vec![
            with_int(node("Cast", &["w_q"], &["w_f"]), "to", FLOAT),
            node("Mul", &["w_f", "w_scale"], &["w"]),
            node("Relu", &["input"], &["x"]),
            node("MatMul", &["x", "w"], &["y"]),
            node("Add", &["y", "bias"], &["out"]),
        ]
    }

    /// The dims of stored tensor `name` in an encoded model.
    fn stored_dims(model: &[u8], name: &str) -> Vec<u64> {
        let top = fields(model).unwrap();
        let graph = fields(
            top.iter()
                .find(|f| f.number == MODEL_GRAPH)
                .unwrap()
                .payload,
        )
        .unwrap();
        stored_tensors(&graph).unwrap().unwrap()[name].dims.clone()
    }

    #[test]
    fn a_product_with_an_8bit_matrix_becomes_one_integer_product() {
        for scale in [&[1, 8][..], &[8], &[1], &[]] {
            let original = typed_model(
                &product(),
                &[("w_q", &[4, 8], INT8), ("w_scale", scale, FLOAT)],
                &["out"],
            );
            let rewritten = integer_matmuls(&original).unwrap().expect("rewritten");
            let nodes = nodes_of(&rewritten);
            let ops: Vec<&str> = nodes.iter().map(|n| n.op_type.as_str()).collect();
            assert_eq!(ops, ["Relu", "DynamicQuantizeMatMul", "Add"], "{scale:?}");
            assert_eq!(nodes[1].domain, MICROSOFT);
            assert_eq!(nodes[1].inputs, ["x", "w_q", "w_scale"]);
            assert_eq!(nodes[1].outputs, ["y"]);
            // The operator takes these scale shapes as they are: the stored tensors are kept.
            assert_eq!(stored_dims(&rewritten, "w_scale"), scale);
            assert_eq!(rewritten.windows(4).filter(|w| w == b"data").count(), 2);
            assert_eq!(imports(&rewritten), [MICROSOFT]);
            assert!(integer_matmuls(&rewritten).unwrap().is_none());
        }
        // A model that imports ONNX Runtime's operators already imports them once.
        let mut original = typed_model(
            &product(),
            &[("w_q", &[4, 8], INT8), ("w_scale", &[8], FLOAT)],
            &["out"],
        );
        let mut opset = Vec::new();
        put_bytes(&mut opset, 1, MICROSOFT.as_bytes());
        put_bytes(&mut original, MODEL_OPSET_IMPORT, &opset);
        let rewritten = integer_matmuls(&original).unwrap().expect("rewritten");
        assert_eq!(imports(&rewritten), [MICROSOFT]);
    }

    /// A stored tensor's name, dims, data type and values (little-endian bytes).
    type StoredValues = (&'static str, &'static [u64], u64, Vec<u8>);

    /// A model with graph inputs, and stored tensors with their values (little-endian bytes).
    fn model_with_values(
        nodes: &[Node],
        stored: &[(&str, &[u64], u64, Vec<u8>)],
        inputs: &[&str],
        outputs: &[&str],
    ) -> Vec<u8> {
        let mut graph = Vec::new();
        for n in nodes {
            put_bytes(&mut graph, GRAPH_NODE, &n.encode());
        }
        for (name, dims, data_type, values) in stored {
            let mut tensor = Vec::new();
            for &d in *dims {
                put_varint(&mut tensor, 1 << 3);
                put_varint(&mut tensor, d);
            }
            put_varint(&mut tensor, TENSOR_DATA_TYPE << 3);
            put_varint(&mut tensor, *data_type);
            put_bytes(&mut tensor, TENSOR_NAME, name.as_bytes());
            put_bytes(&mut tensor, TENSOR_RAW_DATA, values);
            put_bytes(&mut graph, GRAPH_INITIALIZER, &tensor);
        }
        for input in inputs {
            let mut value = Vec::new();
            put_bytes(&mut value, 1, input.as_bytes());
            put_bytes(&mut graph, GRAPH_INPUT, &value);
        }
        for output in outputs {
            let mut value = Vec::new();
            put_bytes(&mut value, 1, output.as_bytes());
            put_bytes(&mut graph, GRAPH_OUTPUT, &value);
        }
        let mut out = Vec::new();
        put_varint(&mut out, 1 << 3);
        put_varint(&mut out, 10);
        put_bytes(&mut out, MODEL_GRAPH, &graph);
        out
    }

    /// `node` with the integer-list attribute `name` = `values`.
    fn with_ints(mut node: Node, name: &str, values: &[i64]) -> Node {
        let mut attribute = Vec::new();
        put_bytes(&mut attribute, 1, name.as_bytes());
        for &v in values {
            put_varint(&mut attribute, 8 << 3); // ints, unpacked
            put_varint(&mut attribute, v as u64);
        }
        put_bytes(&mut node.rest, NODE_ATTRIBUTE, &attribute);
        node
    }

    fn int64s(values: &[i64]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// One self-attention block as exporters write it (4 heads of 8), its padding mask computed
    /// from `attention_mask`, returning `out`.
    fn attention() -> Vec<Node> {
        let perm = [0, 2, 1, 3];
        vec![
            node("Relu", &["x"], &["q"]),
            node("Relu", &["x"], &["k"]),
            node("Relu", &["x"], &["v"]),
            with_int(node("Cast", &["attention_mask"], &["mask_f"]), "to", FLOAT),
            node("Mul", &["mask_f", "big"], &["mask_bias"]),
            node("Reshape", &["q", "heads"], &["q4"]),
            with_ints(node("Transpose", &["q4"], &["qt"]), "perm", &perm),
            node("Mul", &["qt", "quarter_root"], &["qs"]),
            node("Reshape", &["k", "heads"], &["k4"]),
            with_ints(node("Transpose", &["k4"], &["kt"]), "perm", &[0, 2, 3, 1]),
            node("Mul", &["kt", "quarter_root"], &["ks"]),
            node("MatMul", &["qs", "ks"], &["scores"]),
            node("Add", &["scores", "mask_bias"], &["masked"]),
            with_int(node("Softmax", &["masked"], &["p"]), "axis", u64::MAX),
            node("Reshape", &["v", "heads"], &["v4"]),
            with_ints(node("Transpose", &["v4"], &["vt"]), "perm", &perm),
            node("MatMul", &["p", "vt"], &["context"]),
            with_ints(node("Transpose", &["context"], &["joined"]), "perm", &perm),
            node("Reshape", &["joined", "width"], &["out"]),
        ]
    }

    fn attention_model(nodes: &[Node], inputs: &[&str], outputs: &[&str]) -> Vec<u8> {
        let stored: Vec<(&str, &[u64], u64, Vec<u8>)> = vec![
            ("heads", &[4], INT64, int64s(&[0, 0, 4, 8])),
            ("width", &[3], INT64, int64s(&[0, 0, 32])),
            ("quarter_root", &[], FLOAT, 0.5f32.to_le_bytes().to_vec()),
            ("big", &[], FLOAT, (-1e4f32).to_le_bytes().to_vec()),
        ];
        model_with_values(nodes, &stored, inputs, outputs)
    }

    #[test]
    fn a_self_attention_block_becomes_one_operator() {
        let original = attention_model(&attention(), &["x", "attention_mask"], &["out"]);
        let rewritten = fused_attention(&original).unwrap().expect("rewritten");
        let nodes = nodes_of(&rewritten);
        let ops: Vec<&str> = nodes.iter().map(|n| n.op_type.as_str()).collect();
        // The mask arithmetic the block alone read is gone.
        assert_eq!(ops, ["Cast", "Relu", "Relu", "Relu", "MultiHeadAttention"]);
        let (cast, fused) = (&nodes[0], &nodes[4]);
        assert_eq!(cast.inputs, ["attention_mask"]);
        assert_eq!(int_attribute(&cast.rest, "to"), Some(Some(INT32)));
        assert_eq!(fused.domain, MICROSOFT);
        assert_eq!(fused.inputs, ["q", "k", "v", "", cast.outputs[0].as_str()]);
        assert_eq!(fused.outputs, ["out"]);
        assert_eq!(int_attribute(&fused.rest, "num_heads"), Some(Some(4)));
        let scale = 0.25f32.to_le_bytes();
        assert!(fused.rest.windows(4).any(|w| w == scale), "scale 0.5 x 0.5");
        assert_eq!(imports(&rewritten), [MICROSOFT]);
        assert!(fused_attention(&rewritten).unwrap().is_none());
    }

    /// The block as this model's exporter writes it: the split's shape computed as `Concat` of
    /// pieces with heads -1 and size 8 (heads from the projection's bias width), and the NaN guard
    /// `Where(IsNaN(p), fill, p)` after the softmax.
    fn exported_attention(fill: f32) -> (Vec<Node>, Vec<StoredValues>) {
        let mut nodes = attention();
        nodes[0] = node("Add", &["x", "q_bias"], &["q"]);
        nodes[1] = node("Add", &["x", "k_bias"], &["k"]);
        nodes[2] = node("Add", &["x", "v_bias"], &["v"]);
        for (at, split) in [(5, "q"), (8, "k"), (14, "v")] {
            nodes[at].inputs = vec![split.into(), "split_shape".into()];
        }
        // [batch, tokens, -1, 8], the first two read off the input's shape.
        nodes.insert(5, node("Shape", &["x"], &["batch"]));
        nodes.insert(6, node("Shape", &["x"], &["tokens"]));
        nodes.insert(
            7,
            node(
                "Concat",
                &["batch", "tokens", "minus_one", "eight"],
                &["split_shape"],
            ),
        );
        // Softmax at 16 now; the guard between it and the product with the values.
        nodes.insert(17, node("IsNaN", &["p"], &["p_nan"]));
        nodes.insert(18, node("Where", &["p_nan", "fill", "p"], &["p_safe"]));
        let context = nodes.iter().position(|n| n.outputs == ["context"]).unwrap();
        nodes[context].inputs[0] = "p_safe".into();
        let stored = vec![
            ("heads", &[4][..], INT64, int64s(&[0, 0, 4, 8])),
            ("width", &[3][..], INT64, int64s(&[0, 0, 32])),
            ("minus_one", &[1][..], INT64, int64s(&[-1])),
            ("eight", &[1][..], INT64, int64s(&[8])),
            (
                "quarter_root",
                &[][..],
                FLOAT,
                0.5f32.to_le_bytes().to_vec(),
            ),
            ("big", &[][..], FLOAT, (-1e4f32).to_le_bytes().to_vec()),
            ("fill", &[][..], FLOAT, fill.to_le_bytes().to_vec()),
            ("q_bias", &[32][..], FLOAT, vec![0; 4]),
            ("k_bias", &[32][..], FLOAT, vec![0; 4]),
            ("v_bias", &[32][..], FLOAT, vec![0; 4]),
        ];
        (nodes, stored)
    }

    #[test]
    fn heads_from_a_computed_shape_and_a_nan_guard_filling_zero_are_fused() {
        let (nodes, stored) = exported_attention(0.0);
        let model = model_with_values(&nodes, &stored, &["x", "attention_mask"], &["out"]);
        let rewritten = fused_attention(&model).unwrap().expect("rewritten");
        let nodes = nodes_of(&rewritten);
        let fused = nodes
            .iter()
            .find(|n| n.op_type == "MultiHeadAttention")
            .expect("fused");
        // 32 wide, 8 per head.
        assert_eq!(int_attribute(&fused.rest, "num_heads"), Some(Some(4)));
        assert!(!nodes.iter().any(
            |n| ["IsNaN", "Where", "Softmax", "Concat", "Shape"].contains(&n.op_type.as_str())
        ));
        // A guard filling anything but 0 computes something else for a row of masked keys.
        let (nodes, stored) = exported_attention(1.0);
        let model = model_with_values(&nodes, &stored, &["x", "attention_mask"], &["out"]);
        assert!(fused_attention(&model).unwrap().is_none());
    }

    #[test]
    fn a_mask_made_from_other_inputs_values_is_left_alone() {
        // Shapes of other inputs are allowed (the exporter's mask uses them); their values not.
        let mut nodes = attention();
        nodes[4] = node("Mul", &["mask_f", "position_bias"], &["mask_bias"]);
        let model = attention_model(&nodes, &["x", "attention_mask", "position_bias"], &["out"]);
        assert!(fused_attention(&model).unwrap().is_none());
        nodes.insert(4, node("Shape", &["position_bias"], &["bias_shape"]));
        nodes[5] = node("Mul", &["mask_f", "bias_shape"], &["mask_bias"]);
        let model = attention_model(&nodes, &["x", "attention_mask", "position_bias"], &["out"]);
        assert!(fused_attention(&model).unwrap().is_some());
    }

    #[test]
    fn attention_that_is_read_elsewhere_or_has_no_mask_input_is_left_alone() {
        let fuses = |nodes: &[Node], inputs: &[&str], outputs: &[&str]| {
            fused_attention(&attention_model(nodes, inputs, outputs))
                .unwrap()
                .is_some()
        };
        let inputs = ["x", "attention_mask"];
        assert!(fuses(&attention(), &inputs, &["out"]));
        // No attention_mask input to give the operator.
        assert!(!fuses(&attention(), &["x", "mask"], &["out"]));
        // The probabilities or the scores are returned or read by another node.
        assert!(!fuses(&attention(), &inputs, &["out", "p"]));
        let mut shared = attention();
        shared.push(node("Relu", &["scores"], &["elsewhere"]));
        assert!(!fuses(&shared, &inputs, &["out", "elsewhere"]));
        // A softmax over another axis, or heads not joined back.
        let mut other_axis = attention();
        other_axis[13] = with_int(node("Softmax", &["masked"], &["p"]), "axis", 2);
        assert!(!fuses(&other_axis, &inputs, &["out"]));
        let mut unjoined = attention();
        unjoined[17] = with_ints(
            node("Transpose", &["context"], &["joined"]),
            "perm",
            &[0, 1, 2, 3],
        );
        assert!(!fuses(&unjoined, &inputs, &["out"]));
    }

    /// GELU as the exporter writes it, `out = Mul(x, Mul(half, Add(Erf(Div(x, root2)), one)))`,
    /// with these constants.
    fn gelu_model(root2: f32, half: f32, nodes: &[Node], outputs: &[&str]) -> Vec<u8> {
        let stored: Vec<(&str, &[u64], u64, Vec<u8>)> = vec![
            ("root2", &[], FLOAT, root2.to_le_bytes().to_vec()),
            ("half", &[], FLOAT, half.to_le_bytes().to_vec()),
            ("one", &[], FLOAT, 1f32.to_le_bytes().to_vec()),
        ];
        model_with_values(nodes, &stored, &["input"], outputs)
    }

    fn gelu_nodes() -> Vec<Node> {
        vec![
            node("Relu", &["input"], &["x"]),
            node("Div", &["x", "root2"], &["scaled"]),
            node("Erf", &["scaled"], &["erf"]),
            node("Add", &["erf", "one"], &["plus_one"]),
            node("Mul", &["half", "plus_one"], &["halved"]),
            node("Mul", &["x", "halved"], &["out"]),
        ]
    }

    #[test]
    fn a_gelu_written_out_becomes_one_operator() {
        let sqrt2 = std::f32::consts::SQRT_2;
        let rewritten = fused_gelu(&gelu_model(sqrt2, 0.5, &gelu_nodes(), &["out"]))
            .unwrap()
            .expect("rewritten");
        let nodes = nodes_of(&rewritten);
        let ops: Vec<&str> = nodes.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["Relu", "Gelu"]);
        assert_eq!(
            (nodes[1].inputs.as_slice(), nodes[1].outputs.as_slice()),
            (&["x".to_string()][..], &["out".to_string()][..])
        );
        assert_eq!(nodes[1].domain, MICROSOFT);
        // Other constants compute another function; an inner value read elsewhere must stay.
        for (root2, half) in [(2.0, 0.5), (sqrt2, 0.4)] {
            assert!(
                fused_gelu(&gelu_model(root2, half, &gelu_nodes(), &["out"]))
                    .unwrap()
                    .is_none()
            );
        }
        assert!(
            fused_gelu(&gelu_model(sqrt2, 0.5, &gelu_nodes(), &["out", "erf"]))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn only_small_stored_tensors_keep_their_values() {
        let nodes = [node("Relu", &["x"], &["out"])];
        let ints: Vec<i64> = (0..8).collect();
        let stored: Vec<StoredValues> = vec![
            ("eight_ints", &[8], INT64, int64s(&ints)),
            (
                "nine_ints",
                &[9],
                INT64,
                int64s(&(0..9).collect::<Vec<i64>>()),
            ),
            ("scale", &[], FLOAT, 0.25f32.to_le_bytes().to_vec()),
        ];
        let model = model_with_values(&nodes, &stored, &["x"], &["out"]);
        let top = fields(&model).unwrap();
        let graph = fields(
            top.iter()
                .find(|f| f.number == MODEL_GRAPH)
                .unwrap()
                .payload,
        )
        .unwrap();
        let stored = stored_tensors(&graph).unwrap().unwrap();
        assert_eq!(
            stored["eight_ints"].small.as_deref(),
            Some(&int64s(&ints)[..])
        );
        assert_eq!(stored["nine_ints"].small, None, "72 bytes is not small");
        assert_eq!(
            stored["scale"].small.as_deref(),
            Some(&0.25f32.to_le_bytes()[..])
        );
        // Packed int64 varints: small when they decode to at most 64 bytes, whole or not at all.
        let mut graph_bytes = Vec::new();
        for (name, count) in [("packed8", 8u64), ("packed9", 9)] {
            let mut tensor = Vec::new();
            put_varint(&mut tensor, TENSOR_DIMS << 3); // varint
            put_varint(&mut tensor, count);
            put_varint(&mut tensor, TENSOR_DATA_TYPE << 3);
            put_varint(&mut tensor, INT64);
            put_bytes(&mut tensor, TENSOR_NAME, name.as_bytes());
            let varints: Vec<u8> = (0..count as u8).collect();
            put_bytes(&mut tensor, TENSOR_INT64_DATA, &varints);
            put_bytes(&mut graph_bytes, GRAPH_INITIALIZER, &tensor);
        }
        let graph = fields(&graph_bytes).unwrap();
        let stored = stored_tensors(&graph).unwrap().unwrap();
        assert_eq!(stored["packed8"].small.as_ref().map(Vec::len), Some(64));
        assert_eq!(stored["packed9"].small, None);
    }

    /// The operator domains a model imports.
    fn imports(model: &[u8]) -> Vec<String> {
        fields(model)
            .unwrap()
            .iter()
            .filter(|f| f.number == MODEL_OPSET_IMPORT)
            .filter_map(|f| value_name(f.payload))
            .collect()
    }

    #[test]
    fn products_the_integer_operator_cannot_compute_are_left_alone() {
        let fits: &[(&str, &[u64], u64)] = &[("w_q", &[4, 8], INT8), ("w_scale", &[1, 8], FLOAT)];
        let rewrites = |nodes: &[Node], stored: &[(&str, &[u64], u64)]| {
            integer_matmuls(&typed_model(nodes, stored, &["out"]))
                .unwrap()
                .is_some()
        };
        assert!(rewrites(&product(), fits));
        // A scale per row (also when rows and columns are as many), one of higher rank than the
        // matrix, codes that are not int8, a 3-D matrix, a scale that is not f32.
        for stored in [
            &[("w_q", &[4, 8][..], INT8), ("w_scale", &[4, 1][..], FLOAT)][..],
            &[("w_q", &[8, 8], INT8), ("w_scale", &[8, 1], FLOAT)],
            &[("w_q", &[4, 8], INT8), ("w_scale", &[1, 1, 8], FLOAT)],
            &[("w_q", &[4, 8], 2), ("w_scale", &[1, 8], FLOAT)],
            &[("w_q", &[2, 4, 8], INT8), ("w_scale", &[1, 1, 8], FLOAT)],
            &[("w_q", &[4, 8], INT8), ("w_scale", &[1, 8], 10)],
        ] {
            assert!(!rewrites(&product(), stored), "{stored:?}");
        }
        // The cast makes something other than f32, or says nothing.
        let mut to_half = product();
        to_half[0] = with_int(node("Cast", &["w_q"], &["w_f"]), "to", 10);
        assert!(!rewrites(&to_half, fits));
        let mut bare = product();
        bare[0] = node("Cast", &["w_q"], &["w_f"]);
        assert!(!rewrites(&bare, fits));
        // The dequantized matrix is read elsewhere (the scale may be: it is not changed).
        let mut shared = product();
        shared.push(node("MatMul", &["x2", "w"], &["y2"]));
        assert!(!rewrites(&shared, fits));
        let mut scale_shared = product();
        scale_shared.push(node("Mul", &["z", "w_scale"], &["z2"]));
        assert!(rewrites(&scale_shared, fits));
        // The matrix is the left operand.
        let mut left = product();
        left[3] = node("MatMul", &["w", "x"], &["y"]);
        assert!(!rewrites(&left, fits));
    }
}
