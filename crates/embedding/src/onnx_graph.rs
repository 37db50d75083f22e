//! The BERT encoder of all-MiniLM-L6-v2 as an ONNX graph, built in memory from the same `model.safetensors`
//! the candle engine reads: no exported model file to download, pin or keep in step with the weights.
//!
//! The graph uses ONNX Runtime's fused CPU kernels for BERT (the `com.microsoft` domain):
//! `EmbedLayerNormalization` (word + position embeddings, layer norm, and the per-row token count from the
//! attention mask), `Attention` (Q, K and V in one product, masked softmax per head), `SkipLayerNormalization`
//! (residual + bias + layer norm) and `BiasGelu` (bias + exact erf GELU, as BERT's `gelu`). The output is the
//! last hidden state `[batch, sequence, hidden]`; pooling and normalisation stay in Rust, shared with candle.
//!
//! Only the few fields of `onnx.proto` the graph needs are declared here, with their field numbers.

use crate::EmbeddingError;
use safetensors::{Dtype, SafeTensors};

const ONNX_FLOAT: i32 = 1;
const ONNX_INT32: i32 = 6;
const ATTRIBUTE_FLOAT: i32 = 1;
const ATTRIBUTE_INT: i32 = 2;
const MICROSOFT: &str = "com.microsoft";

#[derive(Clone, PartialEq, prost::Message)]
struct ModelProto {
    #[prost(int64, tag = "1")]
    ir_version: i64,
    #[prost(string, tag = "2")]
    producer_name: String,
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    opset_import: Vec<OperatorSetId>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OperatorSetId {
    #[prost(string, tag = "1")]
    domain: String,
    #[prost(int64, tag = "2")]
    version: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfo>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfo>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<Attribute>,
    #[prost(string, tag = "7")]
    domain: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Attribute {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(float, tag = "2")]
    f: f32,
    #[prost(int64, tag = "3")]
    i: i64,
    #[prost(int32, tag = "20")]
    r#type: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(string, tag = "8")]
    name: String,
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ValueInfo {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TypeProto {
    #[prost(message, optional, tag = "1")]
    tensor_type: Option<TensorType>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TensorType {
    #[prost(int32, tag = "1")]
    elem_type: i32,
    #[prost(message, optional, tag = "2")]
    shape: Option<TensorShape>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TensorShape {
    #[prost(message, repeated, tag = "1")]
    dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Dimension {
    #[prost(int64, optional, tag = "1")]
    dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    dim_param: Option<String>,
}

/// The encoder's shape, from `config.json`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BertShape {
    pub hidden: usize,
    pub heads: usize,
    pub layers: usize,
    pub layer_norm_eps: f32,
}

/// Names of the graph's inputs and output.
pub(crate) const INPUT_IDS: &str = "input_ids";
pub(crate) const ATTENTION_MASK: &str = "attention_mask";
pub(crate) const HIDDEN: &str = "last_hidden_state";

/// A 2-D float matrix read from the weights, row-major.
struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl Matrix {
    /// `[cols, rows]`: a linear layer's `[out, in]` weight as the `[in, out]` right operand of `MatMul`.
    fn transposed(&self) -> Matrix {
        let mut data = vec![0.0; self.data.len()];
        for r in 0..self.rows {
            for c in 0..self.cols {
                data[c * self.rows + r] = self.data[r * self.cols + c];
            }
        }
        Matrix {
            rows: self.cols,
            cols: self.rows,
            data,
        }
    }
}

struct Builder<'w> {
    weights: SafeTensors<'w>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

fn bad(what: impl std::fmt::Display) -> EmbeddingError {
    EmbeddingError::Model(format!("model.safetensors: {what}"))
}

impl Builder<'_> {
    fn floats(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), EmbeddingError> {
        let view = self
            .weights
            .tensor(name)
            .map_err(|e| bad(format!("{name}: {e}")))?;
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!("{name} is {:?}, not F32", view.dtype())));
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok((view.shape().to_vec(), data))
    }

    fn vector(&self, name: &str) -> Result<Vec<f32>, EmbeddingError> {
        let (shape, data) = self.floats(name)?;
        if shape.len() != 1 {
            return Err(bad(format!(
                "{name} has shape {shape:?}, expected a vector"
            )));
        }
        Ok(data)
    }

    fn matrix(&self, name: &str) -> Result<Matrix, EmbeddingError> {
        let (shape, data) = self.floats(name)?;
        match shape[..] {
            [rows, cols] => Ok(Matrix { rows, cols, data }),
            _ => Err(bad(format!(
                "{name} has shape {shape:?}, expected a matrix"
            ))),
        }
    }

    fn constant(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: ONNX_FLOAT,
            name: name.to_owned(),
            raw_data: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        });
        name.to_owned()
    }

    fn matrix_constant(&mut self, name: &str, m: &Matrix) -> String {
        self.constant(name, &[m.rows, m.cols], &m.data)
    }

    /// The vector `weight` of the checkpoint as the graph constant `name`.
    fn vector_constant(&mut self, weight: &str, name: &str) -> Result<String, EmbeddingError> {
        let data = self.vector(weight)?;
        Ok(self.constant(name, &[data.len()], &data))
    }

    /// A linear layer's `[out, in]` weight as the `[in, out]` constant `name` that `MatMul` multiplies by.
    fn linear_constant(&mut self, weight: &str, name: &str) -> Result<String, EmbeddingError> {
        let m = self.matrix(weight)?.transposed();
        Ok(self.matrix_constant(name, &m))
    }

    fn node(
        &mut self,
        op: &str,
        domain: &str,
        inputs: &[&str],
        output: &str,
        attributes: Vec<Attribute>,
    ) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![output.to_owned()],
            name: output.to_owned(),
            op_type: op.to_owned(),
            attribute: attributes,
            domain: domain.to_owned(),
        });
        output.to_owned()
    }
}

fn float_attribute(name: &str, value: f32) -> Attribute {
    Attribute {
        name: name.to_owned(),
        f: value,
        i: 0,
        r#type: ATTRIBUTE_FLOAT,
    }
}

fn int_attribute(name: &str, value: i64) -> Attribute {
    Attribute {
        name: name.to_owned(),
        f: 0.0,
        i: value,
        r#type: ATTRIBUTE_INT,
    }
}

fn tensor_info(name: &str, elem_type: i32, dims: &[Dimension]) -> ValueInfo {
    ValueInfo {
        name: name.to_owned(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorType {
                elem_type,
                shape: Some(TensorShape { dim: dims.to_vec() }),
            }),
        }),
    }
}

fn symbolic(name: &str) -> Dimension {
    Dimension {
        dim_value: None,
        dim_param: Some(name.to_owned()),
    }
}

fn fixed(size: usize) -> Dimension {
    Dimension {
        dim_value: Some(size as i64),
        dim_param: None,
    }
}

/// Serialised ONNX model of the encoder in `weights` (a BERT checkpoint with HF names).
pub(crate) fn bert_encoder(weights: &[u8], shape: BertShape) -> Result<Vec<u8>, EmbeddingError> {
    let mut b = Builder {
        weights: SafeTensors::deserialize(weights).map_err(bad)?,
        nodes: Vec::new(),
        initializers: Vec::new(),
    };
    let eps = float_attribute("epsilon", shape.layer_norm_eps);
    let word = b.matrix("embeddings.word_embeddings.weight")?;
    let word = b.matrix_constant("word_embeddings", &word);
    // Every token is of type 0: its embedding is added to every position's once, here.
    let mut position = b.matrix("embeddings.position_embeddings.weight")?;
    let token_type = b.matrix("embeddings.token_type_embeddings.weight")?;
    for row in position.data.chunks_exact_mut(position.cols) {
        for (p, t) in row.iter_mut().zip(&token_type.data[..token_type.cols]) {
            *p += t;
        }
    }
    let position = b.matrix_constant("position_embeddings", &position);
    let gamma = b.vector_constant("embeddings.LayerNorm.weight", "embeddings_gamma")?;
    let beta = b.vector_constant("embeddings.LayerNorm.bias", "embeddings_beta")?;
    b.nodes.push(NodeProto {
        input: [
            INPUT_IDS,
            "",
            &word,
            &position,
            "",
            &gamma,
            &beta,
            ATTENTION_MASK,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        output: vec!["embedded".to_owned(), "token_counts".to_owned()],
        name: "embedded".to_owned(),
        op_type: "EmbedLayerNormalization".to_owned(),
        attribute: vec![eps.clone()],
        domain: MICROSOFT.to_owned(),
    });
    let mut x = "embedded".to_owned();
    for l in 0..shape.layers {
        let p = format!("encoder.layer.{l}.");
        let w = |n: &str| format!("{p}{n}");
        let (q, k, v) = (
            b.matrix(&w("attention.self.query.weight"))?.transposed(),
            b.matrix(&w("attention.self.key.weight"))?.transposed(),
            b.matrix(&w("attention.self.value.weight"))?.transposed(),
        );
        // [hidden, 3 * hidden]: Q, K and V side by side in each row.
        let mut qkv = Vec::with_capacity(q.data.len() * 3);
        for r in 0..q.rows {
            for m in [&q, &k, &v] {
                qkv.extend_from_slice(&m.data[r * m.cols..(r + 1) * m.cols]);
            }
        }
        let qkv = b.constant(&format!("l{l}_qkv"), &[q.rows, q.cols * 3], &qkv);
        let mut qkv_bias = b.vector(&w("attention.self.query.bias"))?;
        qkv_bias.extend(b.vector(&w("attention.self.key.bias"))?);
        qkv_bias.extend(b.vector(&w("attention.self.value.bias"))?);
        let qkv_bias = b.constant(&format!("l{l}_qkv_bias"), &[qkv_bias.len()], &qkv_bias);
        let attended = b.node(
            "Attention",
            MICROSOFT,
            &[&x, &qkv, &qkv_bias, "token_counts"],
            &format!("l{l}_attention"),
            vec![int_attribute("num_heads", shape.heads as i64)],
        );
        let out = b.linear_constant(
            &w("attention.output.dense.weight"),
            &format!("l{l}_attention_out"),
        )?;
        let projected = b.node(
            "MatMul",
            "",
            &[&attended, &out],
            &format!("l{l}_projected"),
            vec![],
        );
        let out_bias = b.vector_constant(
            &w("attention.output.dense.bias"),
            &format!("l{l}_attention_out_bias"),
        )?;
        let g1 = b.vector_constant(
            &w("attention.output.LayerNorm.weight"),
            &format!("l{l}_attention_gamma"),
        )?;
        let b1 = b.vector_constant(
            &w("attention.output.LayerNorm.bias"),
            &format!("l{l}_attention_beta"),
        )?;
        let x1 = b.node(
            "SkipLayerNormalization",
            MICROSOFT,
            &[&projected, &x, &g1, &b1, &out_bias],
            &format!("l{l}_attention_norm"),
            vec![eps.clone()],
        );
        let up = b.linear_constant(&w("intermediate.dense.weight"), &format!("l{l}_up"))?;
        let raised = b.node("MatMul", "", &[&x1, &up], &format!("l{l}_raised"), vec![]);
        let up_bias = b.vector_constant(&w("intermediate.dense.bias"), &format!("l{l}_up_bias"))?;
        let activated = b.node(
            "BiasGelu",
            MICROSOFT,
            &[&raised, &up_bias],
            &format!("l{l}_activated"),
            vec![],
        );
        let down = b.linear_constant(&w("output.dense.weight"), &format!("l{l}_down"))?;
        let lowered = b.node(
            "MatMul",
            "",
            &[&activated, &down],
            &format!("l{l}_lowered"),
            vec![],
        );
        let down_bias = b.vector_constant(&w("output.dense.bias"), &format!("l{l}_down_bias"))?;
        let g2 = b.vector_constant(&w("output.LayerNorm.weight"), &format!("l{l}_output_gamma"))?;
        let b2 = b.vector_constant(&w("output.LayerNorm.bias"), &format!("l{l}_output_beta"))?;
        x = b.node(
            "SkipLayerNormalization",
            MICROSOFT,
            &[&lowered, &x1, &g2, &b2, &down_bias],
            &format!("l{l}_output"),
            vec![eps.clone()],
        );
    }
    b.node("Identity", "", &[&x], HIDDEN, vec![]);
    let batch_by_sequence = [symbolic("batch"), symbolic("sequence")];
    let model = ModelProto {
        ir_version: 8,
        producer_name: "ragvault".to_owned(),
        graph: Some(GraphProto {
            node: b.nodes,
            name: "all-MiniLM-L6-v2".to_owned(),
            initializer: b.initializers,
            input: vec![
                tensor_info(INPUT_IDS, ONNX_INT32, &batch_by_sequence),
                tensor_info(ATTENTION_MASK, ONNX_INT32, &batch_by_sequence),
            ],
            output: vec![tensor_info(
                HIDDEN,
                ONNX_FLOAT,
                &[symbolic("batch"), symbolic("sequence"), fixed(shape.hidden)],
            )],
        }),
        opset_import: vec![
            OperatorSetId {
                domain: String::new(),
                version: 17,
            },
            OperatorSetId {
                domain: MICROSOFT.to_owned(),
                version: 1,
            },
        ],
    };
    Ok(prost::Message::encode_to_vec(&model))
}
