//! The standard `process_*` metrics and `tokenbroker_build_info`, read at scrape time.
//!
//! Prometheus' client libraries export the same process figures under the same names (CPU
//! seconds, resident and virtual memory, open and maximum file descriptors, start time), so the
//! usual dashboards and alerts work unchanged. They come from `/proc/self`, as those libraries
//! read them; where `/proc` is missing (not Linux) the process figures are left out rather than
//! invented.

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// Linux reports process times in `USER_HZ`, which the kernel fixes at 100 for every program
/// (whatever the kernel's own tick rate).
const USER_HZ: f64 = 100.0;

type Encoded = Result<(), std::fmt::Error>;

/// The running build's version, as `--version`, the metrics and the status page give it.
pub(super) const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The source revision the build came from (`build.rs`).
pub(super) const REVISION: &str = env!("TOKENBROKER_REVISION");

/// `tokenbroker_build_info{version,revision} 1`.
pub(super) fn build_info(encoder: &mut DescriptorEncoder<'_>) -> Encoded {
    let labels = [("version", VERSION), ("revision", REVISION)];
    encoder
        .encode_descriptor(
            "tokenbroker_build_info",
            "The running build: its version and source revision",
            None,
            MetricType::Gauge,
        )?
        .encode_family(&labels)?
        .encode_gauge(&1_i64)
}

/// What `/proc/self` says about the process, read once per scrape.
#[derive(Debug, Default, PartialEq)]
struct Process {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    start_time_seconds: f64,
    open_fds: u64,
    max_fds: Option<u64>,
}

/// The `process_*` family, when `/proc` can be read.
pub(super) fn process(encoder: &mut DescriptorEncoder<'_>) -> Encoded {
    let Some(process) = read_process() else {
        return Ok(());
    };
    gauge_or_counter(
        encoder,
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds",
        MetricType::Counter,
        process.cpu_seconds,
    )?;
    let resident = process.resident_bytes as f64;
    gauge_or_counter(
        encoder,
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        MetricType::Gauge,
        resident,
    )?;
    let virtual_bytes = process.virtual_bytes as f64;
    gauge_or_counter(
        encoder,
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes",
        MetricType::Gauge,
        virtual_bytes,
    )?;
    let start = process.start_time_seconds;
    gauge_or_counter(
        encoder,
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch in seconds",
        MetricType::Gauge,
        start,
    )?;
    let open = process.open_fds as f64;
    gauge_or_counter(
        encoder,
        "process_open_fds",
        "Number of open file descriptors",
        MetricType::Gauge,
        open,
    )?;
    if let Some(max) = process.max_fds {
        gauge_or_counter(
            encoder,
            "process_max_fds",
            "Maximum number of open file descriptors",
            MetricType::Gauge,
            max as f64,
        )?;
    }
    Ok(())
}

fn gauge_or_counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    value: f64,
) -> Encoded {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    if matches!(kind, MetricType::Counter) {
        metric.encode_counter::<NoLabelSet, _, u64>(&value, None)
    } else {
        metric.encode_gauge(&value)
    }
}

fn read_process() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|text| boot_time(&text));
    let mut process = parse_stat(&stat, boot_time?)?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    process.resident_bytes = resident_bytes(&status)?;
    process.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64);
    process.max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| max_fds(&text));
    Some(process)
}

/// Seconds since the epoch at boot: the `btime` line of `/proc/stat`.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime ")?.trim().parse().ok())
}

/// Resident memory: the `VmRSS` line of `/proc/self/status`, in kB (which spares knowing the page
/// size `stat`'s `rss` counts in).
fn resident_bytes(status: &str) -> Option<u64> {
    let kib: u64 = status.lines().find_map(|line| {
        line.strip_prefix("VmRSS:")?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })?;
    Some(kib.saturating_mul(1024))
}

/// `/proc/self/stat`: the command name is in parentheses and may hold spaces, so the fields are
/// counted from the last `)`. After it come state (field 3), ..., utime (14), stime (15), ...,
/// starttime (22, ticks after boot), vsize (23, bytes).
fn parse_stat(stat: &str, boot_time: u64) -> Option<Process> {
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    // `fields[0]` is field 3 of the line.
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let ticks = (field(14)? + field(15)?) as f64;
    Some(Process {
        cpu_seconds: ticks / USER_HZ,
        resident_bytes: 0,
        virtual_bytes: field(23)?,
        start_time_seconds: boot_time as f64 + field(22)? as f64 / USER_HZ,
        open_fds: 0,
        max_fds: None,
    })
}

/// The soft limit of the `Max open files` line of `/proc/self/limits` (`unlimited` is none).
fn max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A command name with spaces and a `)` of its own.
        let stat = "4242 (tokenbroker (x) y) S 1 4242 4242 0 -1 4194560 2000 0 0 0 350 150 0 0 20 0 3 0 \
                    123400 987654321 2500 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0";
        let process = parse_stat(stat, 1_700_000_000).expect("parses");
        assert_eq!(process.cpu_seconds, 5.0, "(350 + 150) ticks at 100 Hz");
        assert_eq!(process.virtual_bytes, 987_654_321);
        assert_eq!(process.start_time_seconds, 1_700_000_000.0 + 1234.0);
        assert_eq!(parse_stat("garbage", 0), None);
    }

    #[test]
    fn boot_time_and_fd_limit_come_from_their_lines() {
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
        assert_eq!(
            resident_bytes("Name:\ttokenbroker\nVmRSS:\t   12345 kB\n"),
            Some(12_345 * 1024)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1048576              1048576              files\n";
        assert_eq!(max_fds(limits), Some(1_048_576));
        assert_eq!(
            max_fds("Max open files            unlimited            unlimited            files\n"),
            None
        );
    }

    #[test]
    fn this_process_can_be_read() {
        let process = read_process().expect("/proc/self on Linux");
        assert!(process.resident_bytes > 1 << 20, "{process:?}");
        assert!(process.open_fds >= 3, "{process:?}");
        assert!(process.start_time_seconds > 1_600_000_000.0, "{process:?}");
    }
}
