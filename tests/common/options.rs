//! The table of option extremes: every field of `LogOptions` and
//! `StoreOptions` at zero and at its type's maximum, with what opening a
//! store with it must do (refused with `Error::InvalidOptions` naming that
//! field, or works). `tests/options_extremes.rs` opens a store with each;
//! `tests/faults.rs` checks that each refused log option creates nothing.
//!
//! A field added to the options belongs in this table: the row names the
//! field once, and the label and the expected refusal are made from it.

use std::time::Duration;

use enforcelog::{Durability, StoreOptions};

/// What opening with an option at an extreme must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Refused with `InvalidOptions` naming the field.
    Refused,
    /// Opens and works.
    Works,
}

/// One row: the default options with one field set to an extreme.
#[derive(Debug, Clone)]
pub struct Extreme {
    /// `field = value`, for messages.
    pub label: &'static str,
    /// The field, as `InvalidOptions` names it.
    pub field: &'static str,
    /// True for a field of `LogOptions` (a bare `Log` checks it too).
    pub of_log: bool,
    pub options: StoreOptions,
    pub expect: Expect,
}

/// `field [in log] = value => Refused|Works;`, one row each.
macro_rules! extremes {
    ($($field:ident $(in $log:ident)? = $value:expr => $expect:ident;)*) => {
        vec![$({
            let mut options = StoreOptions::default();
            options $(.$log)? .$field = $value;
            Extreme {
                label: concat!(stringify!($field), " = ", stringify!($value)),
                field: stringify!($field),
                of_log: false $(|| stringify!($log) == "log")?,
                options,
                expect: Expect::$expect,
            }
        }),*]
    };
}

/// Every option at zero and at its maximum.
pub fn extremes() -> Vec<Extreme> {
    extremes! {
        segment_max_bytes in log = 0 => Refused;
        segment_max_bytes in log = u64::MAX => Refused;
        record_max_bytes in log = 0 => Refused;
        record_max_bytes in log = usize::MAX => Refused;
        durability in log = Durability::Interval(Duration::ZERO) => Refused;
        durability in log = Durability::Interval(Duration::MAX) => Works;
        queue_capacity in log = 0 => Refused;
        queue_capacity in log = usize::MAX => Refused;
        index_interval_bytes in log = 0 => Refused;
        index_interval_bytes in log = u64::MAX => Works;
        preallocate_segments in log = false => Works;
        preallocate_segments in log = true => Works;
        detached_timeout = Duration::ZERO => Works;
        detached_timeout = Duration::MAX => Refused;
        recovery_interval = Duration::ZERO => Refused;
        recovery_interval = Duration::MAX => Refused;
        trigger_windows = vec![Duration::ZERO] => Refused;
        trigger_windows = vec![Duration::MAX] => Refused;
        checkpoint_every_entries = 0 => Refused;
        checkpoint_every_entries = u64::MAX => Works;
        checkpoint_interval = Duration::ZERO => Refused;
        checkpoint_interval = Duration::MAX => Works;
        subscriber_lag_warning = 0 => Works;
        subscriber_lag_warning = u64::MAX => Works;
    }
}
