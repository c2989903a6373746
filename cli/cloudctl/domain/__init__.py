"""Plain types shared by every layer: states, value objects and pure validation. Stdlib only."""
