//! Collecting samples, taking medians, and printing the table, the machine-readable
//! `BENCH` lines and the check against the targets of the performance issue.

use std::collections::HashMap;

/// One figure: its machine key, a human label, and how to show it.
#[derive(Clone)]
pub struct Metric {
    /// Machine-readable name, e.g. `upload_MBps`.
    pub key: String,
    /// Row label of the table, unit included.
    pub label: String,
    /// Digits after the decimal point in the table.
    pub decimals: usize,
    /// Whether a ratio to the direct-TCP figure makes sense.
    pub ratio: bool,
}

impl Metric {
    pub fn new(
        key: impl Into<String>,
        label: impl Into<String>,
        decimals: usize,
        ratio: bool,
    ) -> Metric {
        Metric {
            key: key.into(),
            label: label.into(),
            decimals,
            ratio,
        }
    }
}

#[derive(Default)]
struct Cell {
    samples: Vec<f64>,
    error: Option<String>,
}

struct Row {
    metric: Metric,
    cells: HashMap<String, Cell>,
}

/// All figures of one benchmark run: rows are metrics, columns are endpoints.
pub struct Report {
    columns: Vec<String>,
    rows: Vec<Row>,
}

/// Column every ratio refers to.
pub const DIRECT: &str = "direct";
/// Column the Base64 modes and the peers are also compared with.
pub const BINARY: &str = "binary";

impl Report {
    pub fn new(columns: Vec<String>) -> Report {
        Report {
            columns,
            rows: Vec::new(),
        }
    }

    fn row(&mut self, metric: &Metric) -> &mut Row {
        let at = match self.rows.iter().position(|r| r.metric.key == metric.key) {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    metric: metric.clone(),
                    cells: HashMap::new(),
                });
                self.rows.len() - 1
            }
        };
        &mut self.rows[at]
    }

    /// Records one sample of `metric` for `column`.
    pub fn add(&mut self, metric: &Metric, column: &str, value: f64) {
        self.row(metric)
            .cells
            .entry(column.into())
            .or_default()
            .samples
            .push(value);
    }

    /// Records that `metric` failed for `column` (the first error is kept).
    pub fn fail(&mut self, metric: &Metric, column: &str, error: String) {
        self.row(metric)
            .cells
            .entry(column.into())
            .or_default()
            .error
            .get_or_insert(error);
    }

    /// True if `metric` already failed for `column` (further runs are skipped).
    pub fn failed(&self, key: &str, column: &str) -> bool {
        self.cell(key, column).is_some_and(|c| c.error.is_some())
    }

    fn cell(&self, key: &str, column: &str) -> Option<&Cell> {
        self.rows
            .iter()
            .find(|r| r.metric.key == key)?
            .cells
            .get(column)
    }

    /// Median of the samples, if there are any and none of the runs failed.
    pub fn median(&self, key: &str, column: &str) -> Option<f64> {
        let cell = self.cell(key, column)?;
        if cell.error.is_some() || cell.samples.is_empty() {
            return None;
        }
        let mut v = cell.samples.clone();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        Some(if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        })
    }

    fn ratio(&self, metric: &Metric, column: &str, base: &str) -> Option<f64> {
        if !metric.ratio || column == base {
            return None;
        }
        let v = self.median(&metric.key, column)?;
        let b = self.median(&metric.key, base)?;
        (b != 0.0 && v.is_finite()).then(|| v / b)
    }

    /// The human table: one row per metric, `value (ratio to direct)` per column.
    pub fn print_table(&self) {
        let text = |row: &Row, col: &str| -> String {
            match row.cells.get(col) {
                None => "—".into(),
                Some(c) if c.error.is_some() => "error".into(),
                Some(_) => {
                    let v = self.median(&row.metric.key, col).unwrap();
                    let mut s = if v.is_nan() {
                        "—".into()
                    } else {
                        format!("{v:.*}", row.metric.decimals)
                    };
                    if let Some(r) = self.ratio(&row.metric, col, DIRECT) {
                        s += &format!(" ({r:.2}×)");
                    }
                    s
                }
            }
        };
        let label_w = self
            .rows
            .iter()
            .map(|r| r.metric.label.chars().count())
            .max()
            .unwrap_or(0);
        let widths: Vec<usize> = self
            .columns
            .iter()
            .map(|c| {
                let cells = self.rows.iter().map(|r| text(r, c).chars().count());
                cells.chain([c.len()]).max().unwrap()
            })
            .collect();
        let mut line = format!("{:<label_w$}", "");
        for (c, w) in self.columns.iter().zip(&widths) {
            line += &format!(" | {c:>w$}");
        }
        println!("{line}");
        println!("{}", "-".repeat(line.chars().count()));
        for row in &self.rows {
            let mut line = format!("{:<label_w$}", row.metric.label);
            for (c, w) in self.columns.iter().zip(&widths) {
                line += &format!(" | {:>w$}", text(row, c));
            }
            println!("{line}");
        }
        println!(
            "(medians; in parentheses the ratio to the direct figure of the same run: plain TCP, \
             or plain UDP for the UDP rows)"
        );
        for row in &self.rows {
            for col in &self.columns {
                if let Some(Cell { error: Some(e), .. }) = row.cells.get(col) {
                    println!("error: {col} {}: {e}", row.metric.key);
                }
            }
        }
    }

    /// One `BENCH` line per figure, for scripts.
    pub fn print_machine(&self) {
        for row in &self.rows {
            for col in &self.columns {
                let Some(cell) = row.cells.get(col) else {
                    continue;
                };
                let mut line = format!("BENCH mode={col} metric={}", row.metric.key);
                match self.median(&row.metric.key, col) {
                    Some(v) => line += &format!(" value={v:.3}"),
                    None => line += " value=error",
                }
                if let Some(r) = self.ratio(&row.metric, col, DIRECT) {
                    line += &format!(" ratio_direct={r:.3}");
                }
                if col != DIRECT
                    && let Some(r) = self.ratio(&row.metric, col, BINARY)
                {
                    line += &format!(" ratio_binary={r:.3}");
                }
                line += &format!(" runs={}", cell.samples.len());
                println!("{line}");
            }
        }
    }

    /// Checks the figures against the targets of the performance issue. Each line is
    /// PASS, FAIL, or SKIP (a figure it needs was not measured, e.g. no peer installed).
    pub fn print_goals(&self, largest_idle: Option<usize>) {
        let mut goals = Goals {
            report: self,
            lines: Vec::new(),
        };
        let b = BINARY;
        for (metric, min) in [("upload_MBps", 0.45), ("download_MBps", 0.5)] {
            goals.ratio(
                &format!("binary {metric} ≥ {min} × direct"),
                metric,
                b,
                DIRECT,
                min,
            );
        }
        goals.ratio(
            "binary upload ≥ 2.5 × websocat",
            "upload_MBps",
            b,
            "websocat",
            2.5,
        );
        goals.ratio(
            "binary download ≥ 1.3 × websockify",
            "download_MBps",
            b,
            "websockify",
            1.3,
        );
        goals.ratio(
            "binary echo ≥ 2.5 × websocat",
            "echo_MBps",
            b,
            "websocat",
            2.5,
        );
        for metric in ["cpu_up_s_per_GB", "cpu_down_s_per_GB"] {
            goals.at_most(&format!("binary {metric} ≤ 0.5"), metric, b, 0.5);
        }
        for mode in ["websockets-proxy", "base64", "hixie76"] {
            for metric in ["upload_MBps", "download_MBps", "echo_MBps"] {
                goals.ratio(
                    &format!("{mode} {metric} ≥ 0.5 × binary"),
                    metric,
                    mode,
                    b,
                    0.5,
                );
            }
        }
        goals.ratio_at_most(
            "binary RTT p50 ≤ 1.6 × direct",
            "rtt_p50_us",
            b,
            DIRECT,
            1.6,
        );
        match self.median("rtt_p99_us", "websocat") {
            Some(w) => goals.at_most("binary RTT p99 < websocat's", "rtt_p99_us", b, w),
            None => goals.at_most(
                "binary RTT p99 < 100 µs (websocat's, per the issue)",
                "rtt_p99_us",
                b,
                100.0,
            ),
        }
        if let Some(n) = largest_idle {
            let k = |s: &str| format!("idle{n}_{s}");
            goals.at_least(
                &format!("binary: {n} idle tunnels held (goal: 9000)"),
                &k("held"),
                b,
                n as f64,
            );
            goals.at_least(
                &format!("binary: all {n} idle tunnels alive"),
                &k("alive"),
                b,
                n as f64,
            );
            goals.at_most(
                "binary: idle PSS ≤ 36 KiB per tunnel",
                &k("pss_KiB_per_tunnel"),
                b,
                36.0,
            );
            goals.at_most(
                "binary: ≤ 2 threads per idle tunnel",
                &k("threads_per_tunnel"),
                b,
                2.05,
            );
            // Every thread costs memory mappings, and Linux caps them per process
            // (vm.max_map_count): 9000 tunnels must fit under the cap.
            if let Some(cap) = std::fs::read_to_string("/proc/sys/vm/max_map_count")
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
            {
                let name =
                    format!("binary: memory maps per tunnel × 9000 < vm.max_map_count ({cap})");
                goals.at_most(&name, &k("maps_per_tunnel"), b, (cap - 500.0) / 9000.0);
            }
            goals.at_most(
                "binary: new tunnel < 50 ms while idle ones held",
                &k("new_tunnel_ms"),
                b,
                50.0,
            );
        }
        goals.ratio(
            "binary tunnels/s ≥ 1.2 × websocat",
            "tunnels_per_s",
            b,
            "websocat",
            1.2,
        );
        goals.at_most(
            "wsproxy RSS growth over the bulk tests ≤ 4 MiB",
            "rss_growth_KiB",
            b,
            4096.0,
        );
        // UDP (issue 14): more datagrams per second than websocat's UDP mode, RTT no worse.
        goals.ratio_above(
            "wsproxy UDP datagrams/s > websocat's",
            "udp_datagrams_per_s",
            b,
            "websocat",
            1.0,
        );
        goals.ratio_at_most(
            "wsproxy UDP RTT p50 ≤ websocat's",
            "udp_rtt_p50_us",
            b,
            "websocat",
            1.0,
        );
        println!("Targets of the performance issue (from this run):");
        for line in &goals.lines {
            println!("{line}");
        }
    }
}

/// Helper that formats goal checks.
struct Goals<'a> {
    report: &'a Report,
    lines: Vec<String>,
}

impl Goals<'_> {
    /// Adds a line: PASS or FAIL by `pass(got)`; FAIL if a figure it `needs` (key, column)
    /// failed with an error; SKIP if one was not measured.
    fn push(
        &mut self,
        name: &str,
        got: Option<f64>,
        needs: &[(&str, &str)],
        pass: impl Fn(f64) -> bool,
    ) {
        let failed = needs.iter().any(|(key, col)| self.report.failed(key, col));
        let (status, value) = match got {
            None if failed => ("FAIL", "error".to_string()),
            None => ("SKIP", "not measured".to_string()),
            Some(v) if pass(v) => ("PASS", format!("{v:.3}")),
            Some(v) => ("FAIL", format!("{v:.3}")),
        };
        self.lines.push(format!("  {status}  {name}: {value}"));
        println!("BENCH_GOAL status={status} value={value:?} goal={name:?}");
    }

    fn ratio(&mut self, name: &str, key: &str, col: &str, base: &str, min: f64) {
        let r = self
            .report
            .median(key, col)
            .zip(self.report.median(key, base))
            .map(|(a, b)| a / b);
        self.push(name, r, &[(key, col), (key, base)], |r| r >= min);
    }

    /// Like [`Goals::ratio`], but the ratio must be strictly above `min`.
    fn ratio_above(&mut self, name: &str, key: &str, col: &str, base: &str, min: f64) {
        let r = self
            .report
            .median(key, col)
            .zip(self.report.median(key, base))
            .map(|(a, b)| a / b);
        self.push(name, r, &[(key, col), (key, base)], |r| r > min);
    }

    fn ratio_at_most(&mut self, name: &str, key: &str, col: &str, base: &str, max: f64) {
        let r = self
            .report
            .median(key, col)
            .zip(self.report.median(key, base))
            .map(|(a, b)| a / b);
        self.push(name, r, &[(key, col), (key, base)], |r| r <= max);
    }

    fn at_most(&mut self, name: &str, key: &str, col: &str, max: f64) {
        self.push(name, self.report.median(key, col), &[(key, col)], |v| {
            v <= max
        });
    }

    fn at_least(&mut self, name: &str, key: &str, col: &str, min: f64) {
        self.push(name, self.report.median(key, col), &[(key, col)], |v| {
            v >= min
        });
    }
}
