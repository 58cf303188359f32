//! Re-identification risk over a sliding window of analytics events: the smallest number of
//! distinct patients sharing one combination of the kept quasi-identifiers (k), and the share
//! of events whose combination is shared by fewer than the policy's floor.

use std::collections::{HashMap, VecDeque};

use crate::transform::QuasiIdentifiers;

/// What the window says now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Risk {
    /// Events in the window.
    pub events: usize,
    /// Smallest group of distinct patients (0 when the window is empty).
    pub min_group: usize,
    /// Share of the window's events in groups smaller than the floor, 0 to 1.
    pub share_below_floor: f64,
}

/// The last `capacity` events' quasi-identifiers, grouped.
#[derive(Debug)]
pub struct RiskWindow {
    k_floor: usize,
    capacity: usize,
    order: VecDeque<(QuasiIdentifiers, String)>,
    /// Per combination: events of each distinct patient.
    groups: HashMap<QuasiIdentifiers, HashMap<String, u32>>,
}

impl RiskWindow {
    /// An empty window.
    pub fn new(k_floor: usize, capacity: usize) -> Self {
        Self {
            k_floor,
            capacity: capacity.max(1),
            order: VecDeque::new(),
            groups: HashMap::new(),
        }
    }

    /// True once the window holds `capacity` events: before that, a small group may only mean
    /// few events so far, and the service does not act on it.
    pub fn is_full(&self) -> bool {
        self.order.len() >= self.capacity
    }

    /// Adds one event, dropping the oldest when full.
    pub fn add(&mut self, quasi: QuasiIdentifiers, patient: String) {
        if self.order.len() >= self.capacity
            && let Some((old_q, old_p)) = self.order.pop_front()
            && let Some(group) = self.groups.get_mut(&old_q)
        {
            if let Some(n) = group.get_mut(&old_p) {
                *n -= 1;
                if *n == 0 {
                    group.remove(&old_p);
                }
            }
            if group.is_empty() {
                self.groups.remove(&old_q);
            }
        }
        *self
            .groups
            .entry(quasi.clone())
            .or_default()
            .entry(patient.clone())
            .or_default() += 1;
        self.order.push_back((quasi, patient));
    }

    /// Forgets everything (after the generalisation changed, old events no longer describe
    /// what is being published).
    pub fn clear(&mut self) {
        self.order.clear();
        self.groups.clear();
    }

    /// k and the share below the floor, now.
    pub fn measure(&self) -> Risk {
        let events = self.order.len();
        let mut min_group = usize::MAX;
        let mut below = 0u64;
        for group in self.groups.values() {
            let k = group.len();
            min_group = min_group.min(k);
            if k < self.k_floor {
                below += group.values().map(|&n| u64::from(n)).sum::<u64>();
            }
        }
        Risk {
            events,
            min_group: if events == 0 { 0 } else { min_group },
            share_below_floor: if events == 0 {
                0.0
            } else {
                below as f64 / events as f64
            },
        }
    }
}

/// The age band width to use next: the next wider one of `widths` while a full window shows a
/// group below the floor; None to keep the current one.
pub fn coarsened_width(
    risk: &Risk,
    k_floor: usize,
    full: bool,
    current: u8,
    widths: &[u8],
) -> Option<u8> {
    if !full || risk.min_group >= k_floor {
        return None;
    }
    widths.iter().copied().find(|&w| w > current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(age: &str, facility: &str, day: &str) -> QuasiIdentifiers {
        QuasiIdentifiers {
            age_band: age.into(),
            sex: 1,
            residence: "79".into(),
            facility: facility.into(),
            day: day.into(),
        }
    }

    #[test]
    fn k_counts_distinct_patients_and_the_share_counts_events() {
        let mut w = RiskWindow::new(3, 100);
        // Group A: three patients (one of them twice). Group B: one patient, twice.
        for p in ["p1", "p2", "p3", "p1"] {
            w.add(q("30-34", "79025", "2026-12-01"), p.into());
        }
        for _ in 0..2 {
            w.add(q("85-89", "79025", "2026-12-01"), "p9".into());
        }
        let r = w.measure();
        assert_eq!(r.events, 6);
        assert_eq!(
            r.min_group, 1,
            "one patient alone in group B, however many events"
        );
        assert!((r.share_below_floor - 2.0 / 6.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn the_window_slides_and_forgets_the_oldest() {
        let mut w = RiskWindow::new(2, 3);
        w.add(q("0-4", "01001", "2026-01-01"), "lonely".into());
        for p in ["a", "b", "c"] {
            w.add(q("30-34", "79025", "2026-12-01"), p.into());
        }
        let r = w.measure();
        assert!(w.is_full());
        assert_eq!(r.events, 3);
        assert_eq!(r.min_group, 3, "the lonely event left the window");
        assert_eq!(r.share_below_floor, 0.0);
        w.clear();
        assert_eq!(w.measure().min_group, 0);
    }

    #[test]
    fn a_full_window_below_the_floor_widens_the_age_band_step_by_step() {
        let low = Risk {
            events: 10,
            min_group: 1,
            share_below_floor: 0.5,
        };
        let widths = [5, 10, 20];
        assert_eq!(coarsened_width(&low, 5, true, 5, &widths), Some(10));
        assert_eq!(coarsened_width(&low, 5, true, 10, &widths), Some(20));
        assert_eq!(
            coarsened_width(&low, 5, true, 20, &widths),
            None,
            "nothing wider"
        );
        assert_eq!(
            coarsened_width(&low, 5, false, 5, &widths),
            None,
            "not yet full"
        );
        let fine = Risk {
            events: 10,
            min_group: 7,
            share_below_floor: 0.0,
        };
        assert_eq!(coarsened_width(&fine, 5, true, 5, &widths), None);
    }
}
