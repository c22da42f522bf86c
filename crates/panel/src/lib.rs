//! Front panel logic.
