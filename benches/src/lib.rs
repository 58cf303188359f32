//! Benchmarks for lienthong. Each binary runs against the local stack (`deploy/local/up`) and
//! prints figures and ratios; targets live here, never in timed unit tests.

/// Latency percentiles of a sample, in milliseconds.
pub fn percentiles(mut samples: Vec<f64>, points: &[f64]) -> Vec<f64> {
    if samples.is_empty() {
        return points.iter().map(|_| f64::NAN).collect();
    }
    samples.sort_by(f64::total_cmp);
    points
        .iter()
        .map(|p| {
            let idx = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
            samples[idx.min(samples.len() - 1)]
        })
        .collect()
}

/// Processor time and memory of the local stack's processes, by role, read from `/proc`.
pub mod processes {
    use std::collections::BTreeMap;

    /// Linux reports process times in USER_HZ ticks, 100 per second on every architecture
    /// this runs on.
    const TICKS_PER_SECOND: f64 = 100.0;

    /// One process at one reading.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct Reading {
        /// What the process is to the benchmark.
        pub role: &'static str,
        /// Seconds of processor time so far, user and system, every thread.
        pub cpu_seconds: f64,
        /// Proportional set size, MiB: resident memory with each shared page divided among
        /// the processes that map it, so PostgreSQL's shared buffers count once.
        pub pss_mib: f64,
    }

    /// Every process at one reading, by process id.
    #[derive(Debug, Clone, Default)]
    pub struct Usage(pub BTreeMap<u32, Reading>);

    /// A figure per role.
    #[derive(Debug, Clone, Default)]
    pub struct ByRole(pub BTreeMap<&'static str, f64>);

    /// What a process is to the benchmark, from its command line.
    pub fn role_of(pid: u32, own: u32, cmdline: &str, command: &str) -> &'static str {
        if pid == own {
            "this process (gateway, sinks, clients)"
        } else if cmdline.contains("kafka.Kafka") {
            "Kafka broker"
        } else if cmdline.contains("quarkus") || cmdline.contains("apicurio") {
            "schema registry (Apicurio)"
        } else if command == "postgres" {
            "PostgreSQL"
        } else {
            "everything else"
        }
    }

    /// Every process there is, now.
    pub fn usage() -> Usage {
        let own = std::process::id();
        let mut by_pid = BTreeMap::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Usage(by_pid);
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some((command, ticks)) = ticks_of(&stat) else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            let pss_mib = std::fs::read_to_string(entry.path().join("smaps_rollup"))
                .map_or(0.0, |rollup| kib_field(&rollup, "Pss:") / 1024.0);
            by_pid.insert(
                pid,
                Reading {
                    role: role_of(pid, own, &cmdline, command),
                    cpu_seconds: ticks / TICKS_PER_SECOND,
                    pss_mib,
                },
            );
        }
        Usage(by_pid)
    }

    /// The command name and user + system ticks of one `/proc/<pid>/stat` line.
    pub fn ticks_of(stat: &str) -> Option<(&str, f64)> {
        // The command name is in parentheses and may itself hold spaces and parentheses.
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let command = stat.get(open + 1..close)?;
        let mut fields = stat.get(close + 1..)?.split_whitespace();
        // After the name: state, ppid, pgrp, session, tty, tpgid, flags, minflt, cminflt,
        // majflt, cmajflt, then utime and stime.
        let utime: f64 = fields.nth(11)?.parse().ok()?;
        let stime: f64 = fields.next()?.parse().ok()?;
        Some((command, utime + stime))
    }

    /// The kB figure of the line starting with `field` in a `/proc` text such as `status`
    /// or `smaps_rollup` (0 when absent, as for kernel threads).
    pub fn kib_field(text: &str, field: &str) -> f64 {
        text.lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    }

    impl Usage {
        /// Processor seconds each role used since `before`: the processes that ran at both
        /// readings, and all of what those started since used (what ended between them is
        /// not seen).
        pub fn cpu_since(&self, before: &Usage) -> ByRole {
            let mut by_role = BTreeMap::new();
            for (pid, now) in &self.0 {
                let earlier = before.0.get(pid).map_or(0.0, |r| r.cpu_seconds);
                *by_role.entry(now.role).or_insert(0.0) += (now.cpu_seconds - earlier).max(0.0);
            }
            ByRole(by_role)
        }

        /// Proportional set size of each role at this reading, MiB.
        pub fn memory(&self) -> ByRole {
            let mut by_role = BTreeMap::new();
            for r in self.0.values() {
                *by_role.entry(r.role).or_insert(0.0) += r.pss_mib;
            }
            ByRole(by_role)
        }
    }

    impl ByRole {
        /// The figures of every role added up.
        pub fn total(&self) -> f64 {
            self.0.values().sum()
        }
    }
}

/// Resident memory of this process in MiB (Linux).
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .map_or(0.0, |s| processes::kib_field(&s, "VmRSS:") / 1024.0)
}

/// Peak resident memory of this process (MiB) since `reset_peak_rss` or its start.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .map_or(0.0, |s| processes::kib_field(&s, "VmHWM:") / 1024.0)
}

/// Starts a new peak at the present resident memory (Linux `clear_refs` 5), so that
/// `peak_rss_mib` shows what one step reached.
pub fn reset_peak_rss() -> std::io::Result<()> {
    std::fs::write("/proc/self/clear_refs", "5")
}

#[cfg(test)]
mod tests {
    #[test]
    fn stat_lines_give_name_and_ticks() {
        let line = "4242 (tokio (w) 1) S 1 2 3 0 -1 4194560 10 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(
            super::processes::ticks_of(line),
            Some(("tokio (w) 1", 300.0))
        );
        assert_eq!(super::processes::ticks_of("garbage"), None);
    }

    #[test]
    fn proc_texts_give_their_kib_fields() {
        use super::processes::kib_field;
        let rollup = "00400000-ff [rollup]\nRss:  4096 kB\nPss:\t  2048 kB\nPss_Anon: 1 kB\n";
        assert_eq!(kib_field(rollup, "Pss:"), 2048.0);
        assert_eq!(
            kib_field("Name:\tjava\nVmRSS:\t  512 kB\n", "VmRSS:"),
            512.0
        );
        assert_eq!(kib_field("Name:\tkthreadd\n", "Pss:"), 0.0);
    }

    #[test]
    fn roles_follow_command_lines() {
        use super::processes::role_of;
        assert_eq!(
            role_of(7, 7, "", "x"),
            "this process (gateway, sinks, clients)"
        );
        assert_eq!(
            role_of(8, 7, "java -cp k kafka.Kafka c", "java"),
            "Kafka broker"
        );
        assert_eq!(
            role_of(9, 7, "postgres: lienthong COPY", "postgres"),
            "PostgreSQL"
        );
        assert_eq!(role_of(9, 7, "bash", "bash"), "everything else");
    }

    #[test]
    fn usage_counts_what_each_process_used_between_readings() {
        use super::processes::{Reading, Usage};
        let at = |role, cpu_seconds, pss_mib| Reading {
            role,
            cpu_seconds,
            pss_mib,
        };
        let before = Usage(
            [
                (1, at("a", 5.0, 1.0)),
                (2, at("b", 1.0, 1.0)),
                (3, at("b", 9.0, 1.0)),
            ]
            .into(),
        );
        // 3 ended; 4 started.
        let after = Usage(
            [
                (1, at("a", 7.5, 10.0)),
                (2, at("b", 1.5, 4.0)),
                (4, at("b", 2.0, 2.0)),
            ]
            .into(),
        );
        let used = after.cpu_since(&before);
        assert_eq!(used.0, [("a", 2.5), ("b", 2.5)].into());
        assert!((used.total() - 5.0).abs() < 1e-9);
        assert_eq!(after.memory().0, [("a", 10.0), ("b", 6.0)].into());
    }

    #[test]
    fn percentiles_pick_sorted_ranks() {
        let p = super::percentiles((1..=100).map(f64::from).collect(), &[50.0, 99.0]);
        assert_eq!(p, vec![51.0, 99.0]);
    }
}
