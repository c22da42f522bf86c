//! Operator command grammar.
