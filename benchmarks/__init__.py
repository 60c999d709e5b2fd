"""fastmix benchmarks and the reference-structure implementations they compare against."""
