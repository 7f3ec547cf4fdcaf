"""Ray Tune searches (exploration policies, compression) and Ray Data readers they use."""
