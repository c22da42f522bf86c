//! Board profiles and Linux drivers.
