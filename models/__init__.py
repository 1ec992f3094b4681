"""Generator families behind one model contract (arrive with issues #3–#5)."""
