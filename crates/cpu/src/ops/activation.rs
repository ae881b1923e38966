//! Gated activations. GELU follows ggml's CPU path: the input is rounded
//! to f16 and looked up in a table of f16 results, so gemma's outputs
//! match llama.cpp's exactly.

use std::sync::OnceLock;

use crate::ops::ggml_math::swiglu;
use crate::pool::Pool;
use crate::tensor::CpuTensor;
use half::f16;
use quarrel_model::FfnActivation;

const GELU_COEF_A: f32 = 0.044715;
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

fn gelu_table() -> &'static [f16] {
    static TABLE: OnceLock<Vec<f16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| f16::from_f32(gelu_tanh(f16::from_bits(bits).to_f32())))
            .collect()
    })
}

fn gelu(x: f32, table: &[f16]) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        table[f16::from_f32(x).to_bits() as usize].to_f32()
    }
}

/// out = act(gate) * up, row by row; with `up` None, each row of `gate`
/// holds [gate | up].
pub fn glu(
    pool: &Pool,
    gate: &CpuTensor,
    up: Option<&CpuTensor>,
    act: FfnActivation,
    out: &mut CpuTensor,
) {
    let table = gelu_table();
    let n_ff = out.cols;
    out.rows = gate.rows;
    let (up_data, up_cols, up_offset) = match up {
        Some(u) => (&u.data, u.cols, 0),
        None => (&gate.data, gate.cols, n_ff),
    };
    pool.for_each_chunk(out.live_mut(), n_ff, |r, o| {
        let g = &gate.data[r * gate.cols..][..n_ff];
        let u = &up_data[r * up_cols + up_offset..][..n_ff];
        match act {
            FfnActivation::SwiGlu => swiglu(o, g, u),
            FfnActivation::GeGlu => {
                for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                    *o = gelu(g, table) * u;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_table_tracks_the_exact_function() {
        let table = gelu_table();
        for i in -2000..2000 {
            let x = i as f32 * 0.005;
            let exact = gelu_tanh(x);
            // f16 rounding of input and output: about 1e-3 relative.
            assert!(
                (gelu(x, table) - exact).abs() <= 2e-3 * exact.abs().max(0.05),
                "{x}"
            );
        }
        assert_eq!(gelu(-11.0, table), 0.0);
        assert_eq!(gelu(12.0, table), 12.0);
    }
}
