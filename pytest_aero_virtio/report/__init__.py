"""What a person or a CI system sees of a run: terminal lines, the dry run, reports."""
