//! The U-Net's blocks: modulation MLP, ResBlock and AttBlock (docs/method.md §9b).

use tch::nn;
use tch::Tensor;

use crate::layers::{layer_norm_channels, Conv2d, Linear};

/// `MLP_mod(e) = Linear(E→E), SiLU, Linear(E→3C)`, last layer's initial weights × 0.1 (docs/method.md §9b). The output
/// is split into `(a, b, c)`, each `[N, C, 1, 1]`.
#[derive(Debug)]
pub struct Modulation {
    hidden: Linear,
    output: Linear,
}

impl Modulation {
    /// Creates the two layers under `path`.
    pub fn new(path: nn::Path, embedding: i64, channels: i64) -> Self {
        Self {
            hidden: Linear::new(&path / "hidden", embedding, embedding, true, 1.0),
            output: Linear::new(&path / "output", embedding, 3 * channels, true, 0.1),
        }
    }

    /// `(a, b, c)` from the embedding `[N, E]`, each shaped `[N, C, 1, 1]`.
    pub fn forward(&self, emb: &Tensor) -> (Tensor, Tensor, Tensor) {
        let m = self.output.forward(&self.hidden.forward(emb).silu()).unsqueeze(-1).unsqueeze(-1);
        let mut parts = m.chunk(3, 1).into_iter();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => unreachable!("chunk(3) of a tensor with 3C channels yields three parts"),
        }
    }
}

/// `(x + c ⊙ h) / sqrt(1 + c ⊙ c)`: the blocks' gated residual update (docs/method.md §9b).
fn gated_residual(x: &Tensor, c: &Tensor, h: &Tensor) -> Tensor {
    (x + c * h) / (c * c + 1.0).sqrt()
}

/// ResBlock(C) (docs/method.md §9b): modulate, then normalize (the authors' code's order), then Conv, SiLU, Dropout, Conv and
/// the gated residual.
#[derive(Debug)]
pub struct ResBlock {
    modulation: Modulation,
    conv1: Conv2d,
    conv2: Conv2d,
    dropout: f64,
}

impl ResBlock {
    /// Creates the block under `path`.
    pub fn new(path: nn::Path, channels: i64, embedding: i64, kernel: i64, dropout: f64) -> Self {
        Self {
            modulation: Modulation::new(&path / "modulation", embedding, channels),
            conv1: Conv2d::new(&path / "conv1", channels, channels, kernel, 1),
            conv2: Conv2d::new(&path / "conv2", channels, channels, kernel, 1),
            dropout,
        }
    }

    /// Applies the block to `x: [N, C, H, W]` with embedding `[N, E]`.
    pub fn forward(&self, x: &Tensor, emb: &Tensor, train: bool) -> Tensor {
        let (a, b, c) = self.modulation.forward(emb);
        let h = layer_norm_channels(&((a + 1.0) * x + b));
        let h = self.conv1.forward(&h).silu();
        let h = if self.dropout > 0.0 { h.dropout(self.dropout, train) } else { h };
        let h = self.conv2.forward(&h);
        gated_residual(x, &c, &h)
    }
}

/// AttBlock(C, heads) (docs/method.md §9b): modulate, normalize, multi-head self-attention over the `H·W` tokens
/// (q, k, v with bias; output projection without bias), gated residual.
#[derive(Debug)]
pub struct AttBlock {
    modulation: Modulation,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: i64,
}

impl AttBlock {
    /// Creates the block under `path`.
    pub fn new(path: nn::Path, channels: i64, embedding: i64, heads: i64) -> Self {
        Self {
            modulation: Modulation::new(&path / "modulation", embedding, channels),
            q: Linear::new(&path / "q", channels, channels, true, 1.0),
            k: Linear::new(&path / "k", channels, channels, true, 1.0),
            v: Linear::new(&path / "v", channels, channels, true, 1.0),
            out: Linear::new(&path / "out", channels, channels, false, 1.0),
            heads,
        }
    }

    /// Applies the block to `x: [N, C, H, W]` with embedding `[N, E]`.
    pub fn forward(&self, x: &Tensor, emb: &Tensor) -> Tensor {
        let (n, ch, hh, ww) = x.size4().unwrap_or_else(|e| panic!("AttBlock expects [N, C, H, W]: {e}"));
        let (a, b, c) = self.modulation.forward(emb);
        let h = layer_norm_channels(&((a + 1.0) * x + b));
        let tokens = h.flatten(2, 3).transpose(1, 2); // [N, HW, C]
        let d = ch / self.heads;
        let split = |t: Tensor| t.reshape([n, hh * ww, self.heads, d]).transpose(1, 2); // [N, heads, HW, d]
        let q = split(self.q.forward(&tokens));
        let k = split(self.k.forward(&tokens));
        let v = split(self.v.forward(&tokens));
        let scale = 1.0 / (d as f64).sqrt();
        let att = Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, false, scale, false);
        let merged = att.transpose(1, 2).reshape([n, hh * ww, ch]);
        let h = self.out.forward(&merged).transpose(1, 2).reshape([n, ch, hh, ww]);
        gated_residual(x, &c, &h)
    }
}

/// One block slot of a level: a ResBlock, followed by an AttBlock when the level has attention.
#[derive(Debug)]
pub struct LevelBlock {
    res: ResBlock,
    att: Option<AttBlock>,
}

impl LevelBlock {
    /// Creates the slot under `path`.
    pub fn new(path: nn::Path, channels: i64, embedding: i64, kernel: i64, dropout: f64, heads: i64) -> Self {
        let res = ResBlock::new(&path / "res", channels, embedding, kernel, dropout);
        let att = (heads > 0).then(|| AttBlock::new(&path / "att", channels, embedding, heads));
        Self { res, att }
    }

    /// Applies the ResBlock, then the AttBlock if any.
    pub fn forward(&self, x: &Tensor, emb: &Tensor, train: bool) -> Tensor {
        let x = self.res.forward(x, emb, train);
        match &self.att {
            Some(att) => att.forward(&x, emb),
            None => x,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// The attention block's multi-head attention equals an explicit softmax(q kᵀ/sqrt(d)) v computation.
    #[test]
    fn attention_matches_explicit_softmax() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let blk = AttBlock::new(vs.root() / "att", 8, 4, 2);
        let x = Tensor::randn([2, 8, 3, 2], (Kind::Float, Device::Cpu));
        let e = Tensor::randn([2, 4], (Kind::Float, Device::Cpu));
        let got = blk.forward(&x, &e);

        let (a, b, c) = blk.modulation.forward(&e);
        let h = layer_norm_channels(&((a + 1.0) * &x + b));
        let tokens = h.flatten(2, 3).transpose(1, 2);
        let (q, k, v) = (blk.q.forward(&tokens), blk.k.forward(&tokens), blk.v.forward(&tokens));
        let mut heads = Vec::new();
        for i in 0..2 {
            let sl = |t: &Tensor| t.narrow(2, 4 * i, 4);
            let w = (sl(&q).matmul(&sl(&k).transpose(1, 2)) / 2.0).softmax(-1, Kind::Float);
            heads.push(w.matmul(&sl(&v)));
        }
        let merged = Tensor::cat(&heads, 2);
        let h = blk.out.forward(&merged).transpose(1, 2).reshape([2, 8, 3, 2]);
        let want = (&x + &c * h) / (&c * &c + 1.0).sqrt();
        let err = (got - want).abs().max().double_value(&[]);
        assert!(err < 1e-5, "attention differs by {err}");
    }
}
