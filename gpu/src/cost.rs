//! When the device pays: the time a batch would take on the CPU against the time to move it to
//! the device, compile the kernel if it is new, run it, and move the result back.
//!
//! The rates start from conservative defaults and are replaced by what is measured: the device
//! measures its host→device copy rate when it opens, and every batch that runs (on either side)
//! updates the rows-per-second figure of the side it ran on, as a moving average. So the model is
//! calibrated on the machine and the workload it runs, and a device that turns out slower than
//! the CPU stops being chosen.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Rates in units per second, stored as f64 bits so that readers never lock.
#[derive(Debug)]
pub struct CostModel {
    transfer_bytes_per_sec: AtomicU64,
    device_rows_per_sec: AtomicU64,
    cpu_rows_per_sec: AtomicU64,
    compile: AtomicU64,
}

/// What a decision was based on, for EXPLAIN ANALYZE and the logs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub cpu: Duration,
    pub device: Duration,
}

impl Estimate {
    pub fn device_pays(&self) -> bool {
        self.device < self.cpu
    }
}

fn load(cell: &AtomicU64) -> f64 {
    f64::from_bits(cell.load(Ordering::Relaxed))
}

fn store(cell: &AtomicU64, value: f64) {
    cell.store(value.to_bits(), Ordering::Relaxed)
}

/// Weight of a new measurement in the moving averages.
const SMOOTHING: f64 = 0.25;

impl Default for CostModel {
    fn default() -> Self {
        CostModel::new(8.0e9, 2.0e9, 2.0e7, Duration::from_millis(150))
    }
}

impl CostModel {
    /// `cpu_rows_per_sec` and `device_rows_per_sec` are rows through one whole pipeline.
    pub fn new(
        transfer_bytes_per_sec: f64,
        device_rows_per_sec: f64,
        cpu_rows_per_sec: f64,
        compile: Duration,
    ) -> Self {
        CostModel {
            transfer_bytes_per_sec: AtomicU64::new(transfer_bytes_per_sec.to_bits()),
            device_rows_per_sec: AtomicU64::new(device_rows_per_sec.to_bits()),
            cpu_rows_per_sec: AtomicU64::new(cpu_rows_per_sec.to_bits()),
            compile: AtomicU64::new(compile.as_secs_f64().to_bits()),
        }
    }

    /// The estimate for `rows` rows moving `bytes` across PCIe (both ways), with the kernel
    /// already compiled or not.
    pub fn estimate(&self, rows: usize, bytes: usize, compiled: bool) -> Estimate {
        let rows = rows as f64;
        let mut device = bytes as f64 / load(&self.transfer_bytes_per_sec)
            + rows / load(&self.device_rows_per_sec)
            // Launches and synchronisation.
            + 100e-6;
        if !compiled {
            device += load(&self.compile);
        }
        Estimate {
            cpu: Duration::from_secs_f64(rows / load(&self.cpu_rows_per_sec)),
            device: Duration::from_secs_f64(device),
        }
    }

    pub fn record_transfer(&self, bytes: u64, took: Duration) {
        if bytes > 0 && !took.is_zero() {
            self.blend(
                &self.transfer_bytes_per_sec,
                bytes as f64 / took.as_secs_f64(),
            );
        }
    }

    pub fn record_device(&self, rows: usize, took: Duration) {
        if rows > 0 && !took.is_zero() {
            self.blend(&self.device_rows_per_sec, rows as f64 / took.as_secs_f64());
        }
    }

    pub fn record_cpu(&self, rows: usize, took: Duration) {
        if rows > 0 && !took.is_zero() {
            self.blend(&self.cpu_rows_per_sec, rows as f64 / took.as_secs_f64());
        }
    }

    pub fn record_compile(&self, took: Duration) {
        if !took.is_zero() {
            self.blend(&self.compile, took.as_secs_f64());
        }
    }

    fn blend(&self, cell: &AtomicU64, measured: f64) {
        let old = load(cell);
        store(cell, old * (1.0 - SMOOTHING) + measured * SMOOTHING);
    }

    /// The rows at which the device starts to pay for a pipeline moving `bytes_per_row`, with
    /// the kernel compiled: the threshold the tests reason with.
    #[cfg(test)]
    fn break_even_rows(&self, bytes_per_row: usize) -> usize {
        let cpu = 1.0 / load(&self.cpu_rows_per_sec);
        let device = bytes_per_row as f64 / load(&self.transfer_bytes_per_sec)
            + 1.0 / load(&self.device_rows_per_sec);
        if device >= cpu {
            return usize::MAX;
        }
        (100e-6 / (cpu - device)).ceil() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_batches_stay_on_the_cpu_and_large_ones_go_to_the_device() {
        let model = CostModel::default();
        assert!(!model.estimate(1_000, 24_000, true).device_pays());
        assert!(model.estimate(10_000_000, 240_000_000, true).device_pays());
        // An uncompiled kernel raises the bar.
        let rows = model.break_even_rows(24) * 2;
        assert!(model.estimate(rows, rows * 24, true).device_pays());
        assert!(!model.estimate(rows, rows * 24, false).device_pays());
    }

    #[test]
    fn measurements_move_the_decision() {
        let model = CostModel::default();
        let rows = 10_000_000;
        assert!(model.estimate(rows, rows * 24, true).device_pays());
        // The device turns out slow (a shared or throttled GPU): the model learns it.
        for _ in 0..40 {
            model.record_device(rows, Duration::from_secs(5));
        }
        assert!(!model.estimate(rows, rows * 24, true).device_pays());
        assert_eq!(model.break_even_rows(24), usize::MAX);
    }
}
