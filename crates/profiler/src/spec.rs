//! What one benchmark configuration is, and how a sweep expands into configurations.
//!
//! A [`ConfigSpec`] is one point of the grid: a load (a static batch size, a closed-loop
//! concurrency, or an open-loop request rate), prompt and output lengths, and sampling
//! settings. [`Sweep::expand`] forms the cartesian product of the lists given on the
//! command line, loads innermost, so that configs of one *group* (everything but the
//! load equal) are adjacent and sorted by load: the knee and the budget choice are
//! computed per group.

use serde::{Deserialize, Serialize};

/// How requests are offered to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Load {
    /// A static batch: all requests added at once, stepped until all finish.
    Batch { size: usize },
    /// Closed loop: exactly `n` requests in flight through the scheduler.
    Concurrency { n: usize },
    /// Open loop: Poisson arrivals at this mean rate.
    Rate { requests_per_s: f64 },
}

impl Load {
    /// The load's number (batch size, concurrency or rate), the x axis of load plots.
    pub fn value(&self) -> f64 {
        match *self {
            Load::Batch { size } => size as f64,
            Load::Concurrency { n } => n as f64,
            Load::Rate { requests_per_s } => requests_per_s,
        }
    }

    /// The axis name of [`Load::value`].
    pub fn axis_name(&self) -> &'static str {
        match self {
            Load::Batch { .. } => "batch size",
            Load::Concurrency { .. } => "concurrency (requests in flight)",
            Load::Rate { .. } => "request rate (req/s)",
        }
    }

    /// Short label: `batch=8`, `conc=4`, `rate=2.5`.
    pub fn label(&self) -> String {
        match *self {
            Load::Batch { size } => format!("batch={size}"),
            Load::Concurrency { n } => format!("conc={n}"),
            Load::Rate { requests_per_s } => format!("rate={requests_per_s}"),
        }
    }
}

/// One point of the benchmark grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigSpec {
    pub load: Load,
    pub input_len: usize,
    pub output_len: usize,
    pub temperature: f32,
    pub top_p: f32,
    /// The traffic's label (`--workload`, `--input-len-dist`/`--output-len-dist`):
    /// lengths are drawn per request and `input_len`/`output_len` are 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
}

impl ConfigSpec {
    /// Everything but the load: configs with equal group keys form one curve.
    pub fn group_key(&self) -> String {
        match &self.workload {
            Some(w) => format!("workload={w} T={} top_p={}", self.temperature, self.top_p),
            None => format!(
                "in={} out={} T={} top_p={}",
                self.input_len, self.output_len, self.temperature, self.top_p
            ),
        }
    }

    /// A unique, human-readable label.
    pub fn label(&self) -> String {
        format!("{} {}", self.load.label(), self.group_key())
    }
}

/// The lists given on the command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    pub loads: Vec<Load>,
    pub input_lens: Vec<usize>,
    pub output_lens: Vec<usize>,
    pub temperatures: Vec<f32>,
    pub top_ps: Vec<f32>,
    /// A traffic label: lengths are drawn per request, the length lists are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
}

impl Sweep {
    /// Every combination, groups in command-line order, loads innermost.
    pub fn expand(&self) -> Vec<ConfigSpec> {
        let mut out = Vec::new();
        let (input_lens, output_lens) = match self.workload {
            Some(_) => (vec![0], vec![0]),
            None => (self.input_lens.clone(), self.output_lens.clone()),
        };
        for &input_len in &input_lens {
            for &output_len in &output_lens {
                for &temperature in &self.temperatures {
                    for &top_p in &self.top_ps {
                        out.extend(self.loads.iter().map(|&load| ConfigSpec {
                            load,
                            input_len,
                            output_len,
                            temperature,
                            top_p,
                            workload: self.workload.clone(),
                        }));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_is_a_cartesian_product_with_loads_innermost() {
        let s = Sweep {
            loads: vec![Load::Batch { size: 1 }, Load::Batch { size: 8 }],
            input_lens: vec![16, 64],
            output_lens: vec![8],
            temperatures: vec![0.0, 0.7],
            top_ps: vec![1.0],
            workload: None,
        };
        let c = s.expand();
        assert_eq!(c.len(), 8);
        assert_eq!(c[0].load, Load::Batch { size: 1 });
        assert_eq!(c[1].load, Load::Batch { size: 8 });
        assert_eq!(c[0].group_key(), c[1].group_key());
        assert_ne!(c[1].group_key(), c[2].group_key());
        assert_eq!(c[7].input_len, 64);
        assert_eq!(c[3].label(), "batch=8 in=16 out=8 T=0.7 top_p=1");
        let w = Sweep {
            workload: Some("mixed".into()),
            ..s
        }
        .expand();
        assert_eq!(w.len(), 4, "a workload replaces the length lists");
        assert_eq!(w[0].group_key(), "workload=mixed T=0 top_p=1");
    }
}
