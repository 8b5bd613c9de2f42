//! Tables for terminal output, aligned by display width.
