"""The filter scheduler: filters, weighers and the pipeline that picks hosts (pure, no I/O)."""
