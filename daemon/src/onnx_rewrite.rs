//! One graph rewrite of an ONNX model before ONNX Runtime loads it: a table lookup on weights
//! stored as 8-bit integers looks up the integers first and scales only the rows it fetched.
//!
//! Quantized models store a word-embedding table as `int8` codes with a scale per row, used as
//! `Gather(Mul(Cast(codes), scale), ids)`. ONNX Runtime's constant folding turns `Mul(Cast(..))`
//! into an `f32` table at load: for MiniLM that is 47 MB per session instead of 12. As
//! `Mul(Cast(Gather(codes, ids)), Gather(scale, ids))` the lookup has a non-constant input, so
//! nothing is folded and every value is computed exactly as before (one cast and one multiply
//! per element, on the same operands).
//!
//! The model is edited at the protobuf wire level (ModelProto → GraphProto → NodeProto), touching
//! only the nodes of the pattern and copying every other byte as it is, so no ONNX schema crate is
//! needed.

use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("the model is not a valid protobuf message: {0}")]
    Malformed(&'static str),
}

type Result<T> = std::result::Result<T, RewriteError>;

const MODEL_GRAPH: u64 = 7;
const GRAPH_NODE: u64 = 1;
const GRAPH_INITIALIZER: u64 = 5;
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

/// The model with each `Gather(Mul(Cast(codes), scale), ids)` on the table's first axis turned
/// into `Mul(Cast(Gather(codes, ids)), Gather(scale, ids))`, or `None` when it has no such lookup.
/// Rewritten only when that computes the same values: codes and scale are stored tensors (graph
/// initializers), the scale has one value per row (`[rows, 1, ..]`, so fetching its rows with the
/// same ids lines them up), the dequantized table is read by that lookup alone (not by another
/// node, a graph output or a subgraph), and the lookup fetches along the first axis.
pub fn gather_before_dequantize(model: &[u8]) -> Result<Option<Vec<u8>>> {
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
    // Subgraphs (If, Loop, Scan) may read any outer value: leave such models alone.
    if nodes.iter().any(|n| has_subgraph(&n.rest)) {
        return Ok(None);
    }
    // Tensors kept in files beside the model load only from that file: leave it as it is.
    let Some(shapes) = initializer_shapes(&graph)? else {
        return Ok(None);
    };
    let graph_outputs: Vec<String> = graph
        .iter()
        .filter(|f| f.number == GRAPH_OUTPUT && f.wire == LEN)
        .filter_map(|f| value_name(f.payload))
        .collect();
    let mut taken: std::collections::HashSet<String> = nodes
        .iter()
        .flat_map(|n| n.inputs.iter().chain(&n.outputs).cloned())
        .chain(shapes.keys().cloned())
        .chain(graph_outputs.iter().cloned())
        .collect();
    let producer = |name: &str, nodes: &[Node]| {
        nodes
            .iter()
            .position(|n| n.outputs.iter().any(|o| o == name))
    };
    // Nodes reading `name`, plus one if the graph returns it.
    let readers = |name: &str, nodes: &[Node]| {
        nodes
            .iter()
            .map(|n| n.inputs.iter().filter(|i| *i == name).count())
            .sum::<usize>()
            + graph_outputs.iter().filter(|o| *o == name).count()
    };
    let mut changed = false;
    loop {
        // Find one lookup of the pattern in the current node list.
        let found = nodes.iter().enumerate().find_map(|(g, gather)| {
            if !gather.is("Gather", 2) || !axis_is_zero(&gather.rest) {
                return None;
            }
            let m = producer(&gather.inputs[0], &nodes)?;
            let mul = &nodes[m];
            if !mul.is("Mul", 2) || readers(&mul.outputs[0], &nodes) != 1 {
                return None;
            }
            let c = producer(&mul.inputs[0], &nodes)?;
            let cast = &nodes[c];
            if !cast.is("Cast", 1) || readers(&cast.outputs[0], &nodes) != 1 {
                return None;
            }
            let codes = shapes.get(&cast.inputs[0])?;
            let scale = shapes.get(&mul.inputs[1])?;
            let per_row = !codes.is_empty()
                && scale.len() == codes.len()
                && scale[0] == codes[0]
                && scale[1..].iter().all(|&d| d == 1);
            let stored = producer(&cast.inputs[0], &nodes).is_none()
                && producer(&mul.inputs[1], &nodes).is_none();
            (per_row && stored).then_some((g, m, c))
        });
        let Some((g, m, c)) = found else { break };
        let gather = nodes[g].clone();
        let (codes, ids) = (nodes[c].inputs[0].clone(), gather.inputs[1].clone());
        let scale = nodes[m].inputs[1].clone();
        let mut fresh = |what: &str| {
            let mut name = format!("{}__{what}", gather.outputs[0]);
            while taken.contains(&name) {
                name.push('_');
            }
            taken.insert(name.clone());
            name
        };
        let (fetched, unpacked, scales) = (fresh("codes"), fresh("codes_f"), fresh("scales"));
        // The lookup itself (same attributes) on another table.
        let mut fetch = |table: String, output: &str, what: &str| Node {
            inputs: vec![table, ids.clone()],
            outputs: vec![output.to_owned()],
            name: fresh(what),
            ..gather.clone()
        };
        let gather_codes = fetch(codes, &fetched, "gather_codes");
        let gather_scales = fetch(scale, &scales, "gather_scales");
        let mut cast = nodes[c].clone();
        cast.inputs = vec![fetched];
        // A new name: any shape recorded for the old one (the whole table) no longer holds.
        cast.outputs = vec![unpacked.clone()];
        let mut mul = nodes[m].clone();
        mul.inputs = vec![unpacked, scales];
        mul.outputs = gather.outputs.clone();
        // In the lookup's place (after everything its inputs need, before everything that
        // reads its output), so the node list stays in topological order.
        let replacement = [gather_codes, gather_scales, cast, mul];
        let mut rebuilt = Vec::with_capacity(nodes.len() + 1);
        for (i, node) in nodes.into_iter().enumerate() {
            if i == g {
                rebuilt.extend(replacement.iter().cloned());
            } else if i != m && i != c {
                rebuilt.push(node);
            }
        }
        nodes = rebuilt;
        changed = true;
    }
    if !changed {
        return Ok(None);
    }
    let mut graph_bytes = Vec::with_capacity(top[graph_at].payload.len() + 256);
    let mut nodes_written = false;
    for f in &graph {
        if f.number == GRAPH_NODE && f.wire == LEN {
            // All nodes where the first one was (they are contiguous in practice; any other
            // fields between them keep their relative order after the nodes).
            if !nodes_written {
                for node in &nodes {
                    put_bytes(&mut graph_bytes, GRAPH_NODE, &node.encode());
                }
                nodes_written = true;
            }
        } else {
            graph_bytes.extend_from_slice(f.whole);
        }
    }
    let mut out = Vec::with_capacity(model.len() + 256);
    for (i, f) in top.iter().enumerate() {
        if i == graph_at {
            put_bytes(&mut out, MODEL_GRAPH, &graph_bytes);
        } else {
            out.extend_from_slice(f.whole);
        }
    }
    Ok(Some(out))
}

/// Name → dims of the graph's stored tensors (TensorProto `dims` = 1, `name` = 8), or `None` if
/// any is stored outside the model file (`data_location` = 14 is EXTERNAL).
fn initializer_shapes(graph: &[Field]) -> Result<Option<HashMap<String, Vec<u64>>>> {
    const TENSOR_DIMS: u64 = 1;
    const TENSOR_NAME: u64 = 8;
    const TENSOR_DATA_LOCATION: u64 = 14;
    let mut shapes = HashMap::new();
    for f in graph
        .iter()
        .filter(|f| f.number == GRAPH_INITIALIZER && f.wire == LEN)
    {
        let mut name = None;
        let mut dims = Vec::new();
        for t in fields(f.payload)? {
            match (t.number, t.wire) {
                (TENSOR_NAME, LEN) => name = String::from_utf8(t.payload.to_vec()).ok(),
                (TENSOR_DATA_LOCATION, 0) if varint_value(&t) == Some(1) => return Ok(None),
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
            shapes.insert(name, dims);
        }
    }
    Ok(Some(shapes))
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
    const ATTRIBUTE_NAME: u64 = 1;
    const ATTRIBUTE_INT: u64 = 3;
    let Ok(node_fields) = fields(rest) else {
        return false;
    };
    for f in node_fields
        .iter()
        .filter(|f| f.number == NODE_ATTRIBUTE && f.wire == LEN)
    {
        let Ok(attribute) = fields(f.payload) else {
            return false;
        };
        if attribute
            .iter()
            .any(|a| a.number == ATTRIBUTE_NAME && a.payload == b"axis")
        {
            return attribute
                .iter()
                .filter(|a| a.number == ATTRIBUTE_INT && a.wire == 0)
                .all(|a| varint_value(a) == Some(0));
        }
    }
    true
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
        let mut graph = Vec::new();
        for n in nodes {
            put_bytes(&mut graph, GRAPH_NODE, &n.encode());
        }
        put_bytes(&mut graph, 2, b"graph-name");
        for (name, dims) in stored {
            let mut tensor = Vec::new();
            for &d in *dims {
                put_varint(&mut tensor, 1 << 3); // dims, unpacked
                put_varint(&mut tensor, d);
            }
            put_bytes(&mut tensor, 8, name.as_bytes());
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
}
