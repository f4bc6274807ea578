//! Human units for terminal output.

const GIB: f64 = (1u64 << 30) as f64;

/// Bytes as GiB with two decimals (`4.58 GiB`); memory is counted in GiB like GPU capacities.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / GIB)
}

/// Bytes as decimal GB (`4.92 GB`), the unit file sizes are published in.
pub fn gb(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

/// Bytes with a binary unit picked by size (`128.0 KiB`, `3.5 MiB`).
pub fn bytes_auto(bytes: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// Parameter counts (`8.03 B`, `134.5 M`).
pub fn params(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} B", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} M", n / 1e6)
    } else {
        format!("{n:.0}")
    }
}

/// Token counts with a k suffix where exact (`8k`, `131072` → `128k`).
pub fn tokens(n: u64) -> String {
    if n >= 1024 && n.is_multiple_of(1024) {
        format!("{}k", n / 1024)
    } else {
        n.to_string()
    }
}
