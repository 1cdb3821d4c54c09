//! Composing a package's per-layer ONNX files into one model for a range of layers, so that a
//! plan's head (`0..s`) or tail (`s..L`) runs as one ONNX Runtime session instead of a chain of
//! sessions (issue 16; the chain costs 1.17–1.20× one session of the whole model).
//!
//! Every layer file is a `ModelProto` whose graph reads the input tensor (`x`) and writes the
//! output tensor (`y`) — the package format, `docs/model-package.md`. [`compose_chain`] joins
//! them: layer `k`'s input is the previous layer's output (renamed `jmdc_split_k`), every other
//! name of layer `k` (nodes, initializers, intermediate values) gets the prefix `l{k}/`, the first
//! layer's `x` and the last layer's `y` stay. Nothing else is re-encoded: weights, attributes and
//! everything this code does not rename are copied byte for byte through the protobuf wire
//! format ([`wire`]), so no ONNX protobuf crate is needed. Pure: bytes in, bytes out.

mod wire;

use wire::{Field, Value};

/// Why layer files cannot be composed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OnnxError {
    /// The bytes are not a well-formed protobuf message of the expected kind.
    #[error("malformed ONNX model: {0}")]
    Malformed(String),
    /// The model uses something composition does not handle (subgraphs, external data, ...).
    #[error("cannot compose: {0}")]
    Unsupported(String),
    /// No layer to compose.
    #[error("no layer to compose")]
    Empty,
}

// Field numbers of onnx.proto (ONNX 1.17) that composition reads or rewrites.
const MODEL_OPSET_IMPORT: u32 = 8;
const MODEL_GRAPH: u32 = 7;
const MODEL_FUNCTIONS: u32 = 25;
const GRAPH_NODE: u32 = 1;
const GRAPH_NAME: u32 = 2;
const GRAPH_INITIALIZER: u32 = 5;
const GRAPH_DOC: u32 = 10;
const GRAPH_INPUT: u32 = 11;
const GRAPH_OUTPUT: u32 = 12;
const GRAPH_VALUE_INFO: u32 = 13;
const NODE_INPUT: u32 = 1;
const NODE_OUTPUT: u32 = 2;
const NODE_NAME: u32 = 3;
const NODE_ATTRIBUTE: u32 = 5;
const ATTRIBUTE_GRAPH: u32 = 6;
const ATTRIBUTE_GRAPHS: u32 = 11;
const TENSOR_NAME: u32 = 8;
const TENSOR_EXTERNAL_DATA: u32 = 13;
const TENSOR_DATA_LOCATION: u32 = 14;
const VALUE_INFO_NAME: u32 = 1;

/// How the names of layer `k` of `count` are rewritten.
struct Names<'a> {
    k: usize,
    last: bool,
    input: &'a str,
    output: &'a str,
}

impl Names<'_> {
    fn rename(&self, name: &str) -> String {
        if name.is_empty() {
            String::new()
        } else if name == self.input {
            if self.k == 0 {
                name.to_string()
            } else {
                format!("jmdc_split_{}", self.k)
            }
        } else if name == self.output {
            if self.last {
                name.to_string()
            } else {
                format!("jmdc_split_{}", self.k + 1)
            }
        } else {
            format!("l{}/{name}", self.k)
        }
    }

    /// Node and initializer names are only labels: prefixed, never mapped to the split names.
    fn label(&self, name: &str) -> String {
        if name.is_empty() {
            String::new()
        } else {
            format!("l{}/{name}", self.k)
        }
    }
}

/// The opset imports of a model, as raw values.
fn opsets<'a>(fields: &[Field<'a>]) -> Vec<Value<'a>> {
    fields
        .iter()
        .filter(|f| f.number == MODEL_OPSET_IMPORT)
        .map(|f| f.value)
        .collect()
}

/// The one graph of a model, and the model's other fields.
fn split_model(bytes: &[u8]) -> Result<(Vec<Field<'_>>, &[u8]), OnnxError> {
    let fields = wire::parse(bytes)?;
    let mut graph = None;
    for f in &fields {
        match f.number {
            MODEL_GRAPH => {
                if graph.is_some() {
                    return Err(OnnxError::Malformed("two graphs in one model".into()));
                }
                graph = f.bytes();
            }
            MODEL_FUNCTIONS => {
                return Err(OnnxError::Unsupported("model-local functions".into()));
            }
            _ => {}
        }
    }
    let graph = graph.ok_or_else(|| OnnxError::Malformed("model has no graph".into()))?;
    Ok((fields, graph))
}

fn rewrite_node(node: &[u8], names: &Names<'_>, out: &mut Vec<u8>) -> Result<(), OnnxError> {
    let mut bytes = Vec::with_capacity(node.len() + 32);
    for f in wire::parse(node)? {
        match f.number {
            NODE_INPUT | NODE_OUTPUT => {
                let name = names.rename(f.string("node input/output")?);
                wire::write_bytes(&mut bytes, f.number, name.as_bytes());
            }
            NODE_NAME => {
                let name = names.label(f.string("node name")?);
                wire::write_bytes(&mut bytes, f.number, name.as_bytes());
            }
            NODE_ATTRIBUTE => {
                let attribute = f
                    .bytes()
                    .ok_or_else(|| OnnxError::Malformed("attribute".into()))?;
                if wire::parse(attribute)?
                    .iter()
                    .any(|a| a.number == ATTRIBUTE_GRAPH || a.number == ATTRIBUTE_GRAPHS)
                {
                    return Err(OnnxError::Unsupported(
                        "a node with a subgraph (If, Loop, Scan)".into(),
                    ));
                }
                wire::write(&mut bytes, f.number, f.value);
            }
            _ => wire::write(&mut bytes, f.number, f.value),
        }
    }
    wire::write_bytes(out, GRAPH_NODE, &bytes);
    Ok(())
}

fn rewrite_initializer(
    tensor: &[u8],
    names: &Names<'_>,
    out: &mut Vec<u8>,
) -> Result<String, OnnxError> {
    let mut bytes = Vec::with_capacity(tensor.len() + 16);
    let mut original = String::new();
    for f in wire::parse(tensor)? {
        match f.number {
            TENSOR_NAME => {
                original = f.string("initializer name")?.to_string();
                let name = names.rename(&original);
                wire::write_bytes(&mut bytes, f.number, name.as_bytes());
            }
            TENSOR_EXTERNAL_DATA => {
                return Err(OnnxError::Unsupported(format!(
                    "initializer {original:?} keeps its data in an external file"
                )))
            }
            TENSOR_DATA_LOCATION if f.value != Value::Varint(0) => {
                return Err(OnnxError::Unsupported(
                    "an initializer with external data".into(),
                ))
            }
            _ => wire::write(&mut bytes, f.number, f.value),
        }
    }
    wire::write_bytes(out, GRAPH_INITIALIZER, &bytes);
    Ok(original)
}

fn value_info_name(value_info: &[u8]) -> Result<&str, OnnxError> {
    wire::parse(value_info)?
        .into_iter()
        .find(|f| f.number == VALUE_INFO_NAME)
        .ok_or_else(|| OnnxError::Malformed("value info without a name".into()))?
        .string("value info name")
}

fn rewrite_value_info(
    value_info: &[u8],
    names: &Names<'_>,
    number: u32,
    out: &mut Vec<u8>,
) -> Result<(), OnnxError> {
    let mut bytes = Vec::with_capacity(value_info.len() + 16);
    for f in wire::parse(value_info)? {
        if f.number == VALUE_INFO_NAME {
            let name = names.rename(f.string("value info name")?);
            wire::write_bytes(&mut bytes, f.number, name.as_bytes());
        } else {
            wire::write(&mut bytes, f.number, f.value);
        }
    }
    wire::write_bytes(out, number, &bytes);
    Ok(())
}

/// Parts of the merged graph, in the order they are written.
#[derive(Default)]
struct Merged {
    nodes: Vec<u8>,
    initializers: Vec<u8>,
    input: Vec<u8>,
    output: Vec<u8>,
    value_info: Vec<u8>,
}

fn add_layer(graph: &[u8], names: &Names<'_>, merged: &mut Merged) -> Result<(), OnnxError> {
    let fields = wire::parse(graph)?;
    let mut initializer_names = Vec::new();
    for f in fields.iter().filter(|f| f.number == GRAPH_INITIALIZER) {
        let tensor = f
            .bytes()
            .ok_or_else(|| OnnxError::Malformed("initializer".into()))?;
        initializer_names.push(rewrite_initializer(
            tensor,
            names,
            &mut merged.initializers,
        )?);
    }
    let (mut inputs, mut outputs) = (0, 0);
    for f in &fields {
        let payload = || {
            f.bytes()
                .ok_or_else(|| OnnxError::Malformed(format!("graph field {}", f.number)))
        };
        match f.number {
            GRAPH_NODE => rewrite_node(payload()?, names, &mut merged.nodes)?,
            GRAPH_INPUT => {
                let name = value_info_name(payload()?)?;
                if name == names.input {
                    inputs += 1;
                    if names.k == 0 {
                        wire::write_bytes(&mut merged.input, GRAPH_INPUT, payload()?);
                    }
                } else if !initializer_names.iter().any(|i| i == name) {
                    return Err(OnnxError::Unsupported(format!(
                        "graph input {name:?} besides {:?}",
                        names.input
                    )));
                }
                // An initializer listed as an input too (IR < 4): it is an initializer only.
            }
            GRAPH_OUTPUT => {
                let name = value_info_name(payload()?)?;
                if name != names.output {
                    return Err(OnnxError::Unsupported(format!(
                        "graph output {name:?} besides {:?}",
                        names.output
                    )));
                }
                outputs += 1;
                if names.last {
                    wire::write_bytes(&mut merged.output, GRAPH_OUTPUT, payload()?);
                }
            }
            GRAPH_VALUE_INFO => {
                rewrite_value_info(payload()?, names, GRAPH_VALUE_INFO, &mut merged.value_info)?
            }
            GRAPH_INITIALIZER | GRAPH_NAME | GRAPH_DOC => {}
            other => {
                return Err(OnnxError::Unsupported(format!(
                    "graph field {other} (sparse initializers, annotations, metadata)"
                )))
            }
        }
    }
    if inputs != 1 || outputs != 1 {
        return Err(OnnxError::Malformed(format!(
            "the graph must read {:?} once and write {:?} once (reads {inputs}, writes {outputs})",
            names.input, names.output
        )));
    }
    Ok(())
}

/// One model running `layers` in order: layer `k + 1` reads what layer `k` wrote. Every layer
/// reads `input` and writes `output` (the package's tensor names); the result does too. All
/// layers must import the same opsets. A single layer is returned unchanged.
pub fn compose_chain(layers: &[&[u8]], input: &str, output: &str) -> Result<Vec<u8>, OnnxError> {
    let (first, rest) = layers.split_first().ok_or(OnnxError::Empty)?;
    if rest.is_empty() {
        return Ok(first.to_vec());
    }
    let (model_fields, _) = split_model(first)?;
    let first_opsets = opsets(&model_fields);
    let mut merged = Merged::default();
    for (k, layer) in layers.iter().enumerate() {
        let at = |e: OnnxError| match e {
            OnnxError::Malformed(m) => OnnxError::Malformed(format!("layer {k} of the range: {m}")),
            OnnxError::Unsupported(m) => {
                OnnxError::Unsupported(format!("layer {k} of the range: {m}"))
            }
            OnnxError::Empty => OnnxError::Empty,
        };
        let (fields, graph) = split_model(layer).map_err(at)?;
        if opsets(&fields) != first_opsets {
            return Err(OnnxError::Unsupported(format!(
                "layer {k} of the range imports other opsets than the first"
            )));
        }
        let names = Names {
            k,
            last: k == layers.len() - 1,
            input,
            output,
        };
        add_layer(graph, &names, &mut merged).map_err(at)?;
    }
    let mut graph = Vec::with_capacity(
        merged.nodes.len() + merged.initializers.len() + merged.input.len() + 256,
    );
    wire::write_bytes(&mut graph, GRAPH_NAME, b"jmdc_merged_range");
    graph.extend_from_slice(&merged.nodes);
    graph.extend_from_slice(&merged.initializers);
    graph.extend_from_slice(&merged.input);
    graph.extend_from_slice(&merged.output);
    graph.extend_from_slice(&merged.value_info);
    let mut model = Vec::with_capacity(graph.len() + 64);
    for f in &model_fields {
        if f.number == MODEL_GRAPH {
            wire::write_bytes(&mut model, MODEL_GRAPH, &graph);
        } else {
            wire::write(&mut model, f.number, f.value);
        }
    }
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny layer model: `y = Relu(x)` with an initializer named `w` (unused) and a node `n`.
    fn layer(extra_input: Option<&str>) -> Vec<u8> {
        let value_info = |name: &str| {
            let mut v = Vec::new();
            wire::write_bytes(&mut v, VALUE_INFO_NAME, name.as_bytes());
            v
        };
        let mut node = Vec::new();
        wire::write_bytes(&mut node, NODE_INPUT, b"x");
        wire::write_bytes(&mut node, NODE_OUTPUT, b"y");
        wire::write_bytes(&mut node, NODE_NAME, b"n");
        wire::write_bytes(&mut node, 4, b"Relu");
        let mut tensor = Vec::new();
        wire::write(&mut tensor, 1, Value::Varint(1));
        wire::write_bytes(&mut tensor, TENSOR_NAME, b"w");
        let mut graph = Vec::new();
        wire::write_bytes(&mut graph, GRAPH_NODE, &node);
        wire::write_bytes(&mut graph, GRAPH_INITIALIZER, &tensor);
        wire::write_bytes(&mut graph, GRAPH_INPUT, &value_info("x"));
        if let Some(extra) = extra_input {
            wire::write_bytes(&mut graph, GRAPH_INPUT, &value_info(extra));
        }
        wire::write_bytes(&mut graph, GRAPH_OUTPUT, &value_info("y"));
        let mut opset = Vec::new();
        wire::write(&mut opset, 2, Value::Varint(17));
        let mut model = Vec::new();
        wire::write(&mut model, 1, Value::Varint(8));
        wire::write_bytes(&mut model, MODEL_OPSET_IMPORT, &opset);
        wire::write_bytes(&mut model, MODEL_GRAPH, &graph);
        model
    }

    fn strings_of(model: &[u8], field: u32) -> Vec<String> {
        let (_, graph) = split_model(model).expect("model");
        let mut out = Vec::new();
        for f in wire::parse(graph).expect("graph") {
            if f.number != GRAPH_NODE {
                continue;
            }
            for g in wire::parse(f.bytes().expect("node")).expect("node") {
                if g.number == field {
                    out.push(g.string("s").expect("utf-8").to_string());
                }
            }
        }
        out
    }

    #[test]
    fn three_layers_chain_through_the_split_names() {
        let l = layer(None);
        let merged = compose_chain(&[&l, &l, &l], "x", "y").expect("composes");
        assert_eq!(
            strings_of(&merged, NODE_INPUT),
            ["x", "jmdc_split_1", "jmdc_split_2"]
        );
        assert_eq!(
            strings_of(&merged, NODE_OUTPUT),
            ["jmdc_split_1", "jmdc_split_2", "y"]
        );
        assert_eq!(strings_of(&merged, NODE_NAME), ["l0/n", "l1/n", "l2/n"]);
        let (_, graph) = split_model(&merged).expect("model");
        let fields = wire::parse(graph).expect("graph");
        let count = |n: u32| fields.iter().filter(|f| f.number == n).count();
        assert_eq!(
            (
                count(GRAPH_INPUT),
                count(GRAPH_OUTPUT),
                count(GRAPH_INITIALIZER)
            ),
            (1, 1, 3)
        );
    }

    #[test]
    fn one_layer_is_unchanged_and_bad_input_is_refused() {
        let l = layer(None);
        assert_eq!(compose_chain(&[&l], "x", "y").expect("one"), l);
        assert_eq!(compose_chain(&[], "x", "y"), Err(OnnxError::Empty));
        let two_inputs = layer(Some("z"));
        let e = compose_chain(&[&l, &two_inputs], "x", "y").expect_err("second input");
        assert!(
            e.to_string().contains("layer 1") && e.to_string().contains("\"z\""),
            "{e}"
        );
        let e = compose_chain(&[&l, &l[..l.len() - 3]], "x", "y").expect_err("truncated");
        assert!(matches!(e, OnnxError::Malformed(_)), "{e}");
        let e = compose_chain(&[&l, &l], "input", "y").expect_err("wrong tensor name");
        assert!(e.to_string().contains("\"input\""), "{e}");
    }
}
