"""Entropy coding of integer code matrices (ANS through constriction): the "ans" codec, its models, fitting and blob I/O."""
