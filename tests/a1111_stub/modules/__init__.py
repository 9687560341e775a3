"""Stand-in for AUTOMATIC1111's `modules` package (tests only; see ../README.md)."""
