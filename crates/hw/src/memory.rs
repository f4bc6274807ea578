//! System memory: total and available, capped by a cgroup limit when one applies.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct MemoryInfo {
    pub total_bytes: Option<u64>,
    /// Memory that can be allocated without swapping (`MemAvailable`), cgroup headroom applied.
    pub available_bytes: Option<u64>,
    /// A cgroup (container) memory limit below the physical total, if any.
    pub cgroup_limit_bytes: Option<u64>,
}

pub fn probe() -> MemoryInfo {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let (total, available) = parse_meminfo(&meminfo);
    let limit = cgroup_limit();
    let usage = std::fs::read_to_string("/sys/fs/cgroup/memory.current")
        .or_else(|_| std::fs::read_to_string("/sys/fs/cgroup/memory/memory.usage_in_bytes"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let cgroup_limit_bytes = limit.filter(|l| total.is_none_or(|t| *l < t));
    let available_bytes = match (available, cgroup_limit_bytes, usage) {
        (Some(a), Some(l), Some(u)) => Some(a.min(l.saturating_sub(u))),
        (a, _, _) => a,
    };
    MemoryInfo {
        total_bytes: total,
        available_bytes,
        cgroup_limit_bytes,
    }
}

/// `(MemTotal, MemAvailable)` in bytes from `/proc/meminfo` text.
pub fn parse_meminfo(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

fn cgroup_limit() -> Option<u64> {
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok();
    let v1 = || std::fs::read_to_string("/sys/fs/cgroup/memory/memory.limit_in_bytes").ok();
    let text = v2.or_else(v1)?;
    text.trim().parse::<u64>().ok().filter(|&b| b < 1 << 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo() {
        let text =
            "MemTotal:       24576000 kB\nMemFree:         1000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(
            parse_meminfo(text),
            (Some(24576000 * 1024), Some(20000000 * 1024))
        );
    }
}
