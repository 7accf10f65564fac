//! The gap: events the fail-safe path dropped since the last gap marker,
//! per (tenant, rule) up to [`GAP_LOSSES_MAX`] pairs, and the marker that
//! records them durably once writing works again. A marker that cannot be
//! written is put back, ahead of newer drops, so no drop goes unrecorded.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use tracing::{info, warn};

use super::Inner;
use crate::event::{check_id, Field, GapLoss, LossSpan, GAP_LOSSES_MAX};
use crate::payload;
use crate::record::{now_us, Record};

/// Events dropped since the last gap marker, and who lost them.
#[derive(Debug, Default, Clone)]
pub(crate) struct GapState {
    pub dropped: u64,
    pub first_us: i64,
    pub last_us: i64,
    /// Per (tenant, rule): at most `GAP_LOSSES_MAX` pairs.
    losses: BTreeMap<(String, String), LossSpan>,
    /// Drops of further pairs, and of events whose ids are invalid.
    unattributed: Option<LossSpan>,
    /// Drops taken by a gap marker being written (still pending).
    pub writing: u64,
}

impl GapState {
    pub(super) fn add(&mut self, tenant_id: &str, rule_id: &str, at_us: i64, now_us: i64) {
        if self.dropped == 0 {
            self.first_us = now_us;
        }
        self.dropped += 1;
        self.last_us = now_us;
        let key = (tenant_id.to_string(), rule_id.to_string());
        let valid = check_id(Field::TenantId, tenant_id).is_ok()
            && check_id(Field::RuleId, rule_id).is_ok();
        if let Some(span) = self.losses.get_mut(&key) {
            span.add(at_us);
        } else if valid && self.losses.len() < GAP_LOSSES_MAX {
            self.losses.insert(key, LossSpan::one(at_us));
        } else {
            add_span(&mut self.unattributed, LossSpan::one(at_us));
        }
    }

    /// Puts back the drops of a marker that could not be written, ahead of
    /// those that came meanwhile.
    fn restore(&mut self, taken: GapState) {
        let newer = std::mem::replace(self, taken);
        self.writing = 0;
        self.dropped += newer.dropped;
        if newer.dropped > 0 {
            self.last_us = newer.last_us;
        }
        for (key, span) in newer.losses {
            if let Some(mine) = self.losses.get_mut(&key) {
                let mut merged = Some(*mine);
                add_span(&mut merged, span);
                *mine = merged.unwrap_or(span);
            } else if self.losses.len() < GAP_LOSSES_MAX {
                self.losses.insert(key, span);
            } else {
                add_span(&mut self.unattributed, span);
            }
        }
        if let Some(span) = newer.unattributed {
            add_span(&mut self.unattributed, span);
        }
    }
}

fn add_span(into: &mut Option<LossSpan>, span: LossSpan) {
    *into = Some(match *into {
        None => span,
        Some(mine) => LossSpan {
            count: mine.count.saturating_add(span.count),
            first_at_us: mine.first_at_us.min(span.first_at_us),
            last_at_us: mine.last_at_us.max(span.last_at_us),
        },
    });
}

/// Appends the pending gap as a marker, if any and if the log works.
pub(super) fn write_gap_marker(inner: &Inner) {
    let log = inner.log();
    if log.is_poisoned() || log.on_writer_thread() {
        return;
    }
    // Takes the pending drops (drops meanwhile start a new gap); a marker
    // that cannot be written puts them back.
    let gap = {
        let mut state = inner.gap.lock().unwrap_or_else(|e| e.into_inner());
        if state.dropped == 0 || state.writing > 0 {
            return;
        }
        let taken = std::mem::take(&mut *state);
        state.writing = taken.dropped;
        taken
    };
    let losses: Vec<GapLoss> = gap
        .losses
        .iter()
        .map(|((tenant_id, rule_id), span)| GapLoss {
            tenant_id: tenant_id.clone(),
            rule_id: rule_id.clone(),
            span: *span,
        })
        .collect();
    let record = Record::new(
        now_us(),
        payload::encode_gap(
            gap.dropped,
            gap.first_us,
            gap.last_us,
            &losses,
            gap.unattributed,
        ),
    );
    let dropped = gap.dropped;
    match log.append_blocking(record) {
        Ok(offset) => {
            inner.gap.lock().unwrap_or_else(|e| e.into_inner()).writing = 0;
            inner.counters.gap_markers.fetch_add(1, Ordering::Relaxed);
            info!(offset, dropped, "wrote a gap marker");
        }
        Err(e) => {
            inner
                .gap
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .restore(gap);
            warn!(error = %e, dropped, "could not write a gap marker yet");
        }
    }
}
