"""Research tools, imported only by the command line: datasets and splits, training, evaluation (slices and
volumes), the backbone comparison, the benchmark, and the LLM comparison with its text metrics."""
