"""plainflower: the numpy toy app of edgefl's round benchmark (stock Flower 1.42 only)."""
