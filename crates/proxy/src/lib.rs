//! The transaction-stateful proxy core.
