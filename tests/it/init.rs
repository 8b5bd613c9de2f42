//! `wxpush init`: the starter config.
