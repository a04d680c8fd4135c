//! Knowledge distillation from the full-precision model while a quantized copy of it trains.
//!
//! The quantized network (the student) learns from the full-precision network it came from (the
//! teacher, frozen, on its running BatchNorm statistics): its loss mixes the cross-entropy on the
//! labels with the Kullback–Leibler divergence from the teacher's softened output (Hinton et
//! al., 2015), `(1 − w)·CE + w·T²·KL(softmax(t/T) ‖ softmax(s/T))`. The teacher sees the same
//! augmented batch, so the student is pulled toward the function the FP model computes, not only
//! toward the labels.

use crate::model::{Model, QuantCtx};
use crate::quant::policy::{LayerBits, Policy};
use crate::quant::quantizer::QuantScheme;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// How much the teacher's output counts, and how soft it is.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Distill {
    /// Weight `w` of the distillation term, in (0, 1]; the labels' cross-entropy gets `1 − w`.
    pub weight: f64,
    /// Temperature `T` (> 0) both outputs are divided by before the softmax.
    pub temperature: f64,
}

impl Distill {
    /// Checks the weight and temperature, naming the flag at fault.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.weight.is_finite() && self.weight > 0.0 && self.weight <= 1.0) {
            return Err(format!(
                "--distill {}: the distillation weight must lie in (0, 1] (leave the flag out for none)",
                self.weight
            ));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(format!(
                "--distill-temp {}: the temperature must be positive and finite",
                self.temperature
            ));
        }
        Ok(())
    }
}

/// The frozen full-precision model a quantized training learns from.
pub struct Teacher {
    model: Model,
    float: Vec<LayerBits>,
    scheme: QuantScheme,
    /// The mix and temperature.
    pub distill: Distill,
}

impl std::fmt::Debug for Teacher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Teacher")
            .field("layers", &self.float.len())
            .field("distill", &self.distill)
            .finish()
    }
}

impl Teacher {
    /// `model` (full precision; the caller hands over its own copy) as the teacher.
    pub fn new(model: Model, scheme: QuantScheme, distill: Distill) -> Self {
        let float = Policy::float(&model.layer_names()).bits;
        Teacher {
            model,
            float,
            scheme,
            distill,
        }
    }

    /// The teacher's logits for `images`, without gradient.
    pub fn logits(&self, images: &Tensor) -> Tensor {
        tch::no_grad(|| {
            self.model
                .net
                .forward(images, &QuantCtx::new(self.scheme, &self.float))
        })
    }

    /// The training loss of a student that gave `logits` for `images` labelled `labels`.
    pub fn loss(&self, logits: &Tensor, images: &Tensor, labels: &Tensor) -> Tensor {
        let Distill {
            weight,
            temperature,
        } = self.distill;
        let kd = soft_kl(logits, &self.logits(images), temperature);
        if weight >= 1.0 {
            kd
        } else {
            super::trainer::cross_entropy(logits, labels) * (1.0 - weight) + kd * weight
        }
    }
}

/// `T²·KL(softmax(teacher/T) ‖ softmax(student/T))`, the mean over the batch (the `T²` keeps its
/// gradient's scale independent of `T`).
pub fn soft_kl(student: &Tensor, teacher: &Tensor, temperature: f64) -> Tensor {
    let log_s = (student / temperature).log_softmax(1, Kind::Float);
    let log_t = (teacher / temperature).log_softmax(1, Kind::Float);
    (log_t.exp() * (&log_t - log_s))
        .sum_dim_intlist(1, false, Kind::Float)
        .mean(Kind::Float)
        * (temperature * temperature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn t(rows: &[[f32; 3]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        crate::host::tensor(&flat, &[rows.len() as i64, 3], Device::Cpu)
    }

    #[test]
    fn the_divergence_is_zero_only_where_the_outputs_agree() {
        let a = t(&[[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]]);
        // A constant shift of a row leaves its softmax unchanged.
        let shifted = t(&[[2.0, 3.0, 4.0], [-0.5, -2.0, -1.0]]);
        assert!(soft_kl(&a, &shifted, 2.0).double_value(&[]).abs() < 1e-6);
        let b = t(&[[3.0, 2.0, 1.0], [0.5, -1.0, 0.0]]);
        let kl = soft_kl(&b, &a, 1.0).double_value(&[]);
        // Row 1 by hand: p = softmax(1,2,3), KL(p ‖ softmax(3,2,1)) = Σ p·(2·(x−2)) = 2·(p3 − p1).
        let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|x| x.exp()).collect();
        let z: f64 = e.iter().sum();
        let expected = 2.0 * (e[2] - e[0]) / z / 2.0; // row 2 agrees: mean over two rows
        assert!((kl - expected).abs() < 1e-5, "{kl} vs {expected}");
        // A higher temperature softens both and shrinks the divergence before the T² rescaling.
        let soft = soft_kl(&b, &a, 4.0).double_value(&[]) / 16.0;
        assert!(soft < kl && soft > 0.0);
    }

    #[test]
    fn bad_settings_name_their_flag() {
        let ok = Distill {
            weight: 0.5,
            temperature: 1.0,
        };
        assert!(ok.validate().is_ok());
        for w in [0.0, -0.1, 1.5, f64::NAN] {
            let e = Distill { weight: w, ..ok }.validate().unwrap_err();
            assert!(e.contains("--distill "), "{e}");
        }
        for temp in [0.0, -1.0, f64::INFINITY] {
            let e = Distill {
                temperature: temp,
                ..ok
            }
            .validate()
            .unwrap_err();
            assert!(e.contains("--distill-temp"), "{e}");
        }
    }
}
