//! Process metrics under Prometheus's standard `process_*` names, and a build information
//! metric, exported by every service that serves `/metrics`: memory, CPU and file descriptors
//! per pod without a node exporter, and which build each replica runs during a rollout.

use std::time::Duration;

use crate::Metric;

/// `lienthong_build_info`: always 1; the labels say what runs.
pub const BUILD_INFO: Metric = Metric::gauge(
    "lienthong_build_info",
    &["service", "version"],
    "Always 1; labels name the service binary and its version",
);
/// `process_cpu_seconds_total`: user and system CPU time.
pub const CPU_SECONDS: Metric = Metric::counter(
    "process_cpu_seconds_total",
    &[],
    "User and system CPU time spent, in whole seconds",
);
/// `process_resident_memory_bytes`: resident set size.
pub const RESIDENT_MEMORY: Metric = Metric::gauge(
    "process_resident_memory_bytes",
    &[],
    "Resident memory size, in bytes",
);
/// `process_virtual_memory_bytes`: virtual memory size.
pub const VIRTUAL_MEMORY: Metric = Metric::gauge(
    "process_virtual_memory_bytes",
    &[],
    "Virtual memory size, in bytes",
);
/// `process_open_fds`: open file descriptors (sockets included).
pub const OPEN_FDS: Metric = Metric::gauge(
    "process_open_fds",
    &[],
    "Open file descriptors, sockets included",
);
/// `process_max_fds`: the soft limit of open file descriptors.
pub const MAX_FDS: Metric = Metric::gauge(
    "process_max_fds",
    &[],
    "Most file descriptors the process may open (soft limit)",
);
/// `process_threads`: operating-system threads.
pub const THREADS: Metric = Metric::gauge("process_threads", &[], "Operating-system threads");
/// `process_start_time_seconds`: start time since the Unix epoch.
pub const START_TIME: Metric = Metric::gauge(
    "process_start_time_seconds",
    &[],
    "Start time of the process since the Unix epoch, in seconds",
);

/// Every metric this module exports.
pub const ALL: &[Metric] = &[
    BUILD_INFO,
    CPU_SECONDS,
    RESIDENT_MEMORY,
    VIRTUAL_MEMORY,
    OPEN_FDS,
    MAX_FDS,
    THREADS,
    START_TIME,
];

/// How often the process figures are read: well under any scrape interval in use.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Kernel clock ticks per second in `/proc` (USER_HZ, 100 on every Linux architecture that
/// lienthong runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of the process's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSample {
    /// User plus system CPU seconds.
    pub cpu_seconds: f64,
    /// Resident set size in bytes.
    pub resident_bytes: u64,
    /// Virtual memory size in bytes.
    pub virtual_bytes: u64,
    /// Threads.
    pub threads: u64,
    /// Start time since the Unix epoch, in seconds.
    pub start_time_seconds: f64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// Soft limit of open file descriptors.
    pub max_fds: u64,
}

/// Reads the figures of this process from `/proc` (Linux); `None` where `/proc` is missing or
/// unreadable.
pub fn sample() -> Option<ProcessSample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let boot_time = boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let mut s = parse_stat(&stat, boot_time)?;
    s.open_fds = open_fds;
    s.resident_bytes = resident_bytes(&status)?;
    s.max_fds = max_open_files(&limits)?;
    Some(s)
}

/// Parses `/proc/<pid>/stat` (see proc(5)); the command name may hold spaces and parentheses,
/// so fields are counted from the last `)`.
fn parse_stat(stat: &str, boot_time: u64) -> Option<ProcessSample> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // After the name, field 3 (state) comes first: field n is at index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(ProcessSample {
        cpu_seconds: (field(14)? + field(15)?) as f64 / TICKS_PER_SECOND,
        threads: field(20)?,
        start_time_seconds: boot_time as f64 + field(22)? as f64 / TICKS_PER_SECOND,
        virtual_bytes: field(23)?,
        // Field 24 counts pages, whose size varies by platform: /proc/self/status says bytes.
        resident_bytes: 0,
        open_fds: 0,
        max_fds: 0,
    })
}

/// The `VmRSS` line of `/proc/<pid>/status` (kB), in bytes.
fn resident_bytes(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// The `btime` line of `/proc/stat`: boot time since the Unix epoch, in seconds.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit on the `Max open files` line of `/proc/<pid>/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Records `sample` in the installed recorder.
fn record(sample: &ProcessSample) {
    metrics::counter!(CPU_SECONDS.name).absolute(sample.cpu_seconds as u64);
    metrics::gauge!(RESIDENT_MEMORY.name).set(sample.resident_bytes as f64);
    metrics::gauge!(VIRTUAL_MEMORY.name).set(sample.virtual_bytes as f64);
    metrics::gauge!(OPEN_FDS.name).set(sample.open_fds as f64);
    metrics::gauge!(MAX_FDS.name).set(sample.max_fds as f64);
    metrics::gauge!(THREADS.name).set(sample.threads as f64);
    metrics::gauge!(START_TIME.name).set(sample.start_time_seconds);
}

/// Describes these metrics, sets the build information and starts the sampler. The sampler
/// lives as long as the Tokio runtime, as the exporter it feeds does.
pub(crate) fn start() {
    crate::describe(ALL);
    let service = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown".into());
    metrics::gauge!(BUILD_INFO.name, "service" => service, "version" => env!("CARGO_PKG_VERSION"))
        .set(1.0);
    let Some(first) = sample() else {
        tracing::warn!("no /proc on this system: process_* metrics are not exported");
        return;
    };
    record(&first);
    tokio::spawn(async {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        loop {
            tick.tick().await;
            if let Some(s) = sample() {
                record(&s);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_from_the_last_parenthesis() {
        // A command name with spaces and a parenthesis, as a hostile binary name could have.
        let stat = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 \
                    7 0 123456 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1";
        let s = parse_stat(stat, 1_700_000_000).expect("parses");
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.threads, 7);
        assert_eq!(s.start_time_seconds, 1_700_000_000.0 + 1234.56);
        assert_eq!(s.virtual_bytes, 104_857_600);
        assert_eq!(
            resident_bytes("Name:\tx\nVmRSS:\t   10240 kB\nThreads: 7\n"),
            Some(10 << 20)
        );
    }

    #[test]
    fn truncated_or_foreign_text_gives_no_sample() {
        assert_eq!(parse_stat("4242 (x) S 1 2", 0), None);
        assert_eq!(parse_stat("no parenthesis", 0), None);
        assert_eq!(boot_time("cpu 1 2 3\n"), None);
        assert_eq!(resident_bytes("VmRSS: lots\n"), None);
        assert_eq!(
            max_open_files("Max open files  unlimited unlimited files\n"),
            None
        );
        assert_eq!(
            max_open_files(
                "Max open files            1024                 524288               files\n"
            ),
            Some(1024)
        );
    }

    #[test]
    fn this_process_is_sampled() {
        let s = sample().expect("/proc is readable on Linux");
        assert!(s.resident_bytes > 1 << 20, "{s:?}");
        assert!(s.virtual_bytes >= s.resident_bytes, "{s:?}");
        assert!(
            s.threads >= 1 && s.open_fds >= 3 && s.max_fds >= s.open_fds,
            "{s:?}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        assert!(
            s.start_time_seconds <= now + 1.0 && s.start_time_seconds > now - 86_400.0,
            "{s:?}"
        );
    }
}
