//! Webhook notifications (SPEC.md §9).
