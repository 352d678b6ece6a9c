//! Off-CPU time: a window's rows (daemon/offcpu.rs ranks them) as
//! observations per `process`, `function`, `module` and `state`.

use super::cpu::Window;
use crate::alerts::signals::{Evidence, Observation, Signal, labels};

/// One observation per ranked row of a window: seconds off the CPU.
pub fn window_observations(w: &Window) -> Vec<Observation> {
    w.top
        .iter()
        .map(|r| Observation {
            signal: Signal::OffCpuSeconds,
            labels: labels([
                ("process", &r.process),
                ("function", &r.function),
                ("module", &r.module),
                ("state", r.state.map(|s| s.name()).unwrap_or("")),
            ]),
            value: r.self_samples as f64 / 1e6,
            count: 0,
            evidence: Evidence::None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{collectors::offcpu::ThreadState, observe::cpu::HotRow};

    #[test]
    fn rows_become_seconds_with_their_state() {
        let w = Window {
            samples: 3_000_000,
            top: vec![HotRow {
                process: "app".into(),
                function: "nap".into(),
                module: "app".into(),
                self_samples: 1_500_000,
                state: Some(ThreadState::Sleeping),
                ..HotRow::default()
            }],
            other_samples: 1_500_000,
            ..Window::default()
        };
        let obs = window_observations(&w);
        assert_eq!(obs.len(), 1);
        assert_eq!(obs[0].value, 1.5);
        assert_eq!(obs[0].labels["state"], "sleeping");
        assert_eq!(
            obs[0].labels.keys().collect::<Vec<_>>().len(),
            Signal::OffCpuSeconds.label_names().len()
        );
    }
}
