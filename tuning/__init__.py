"""Many runs: the study and its workers, the search space, the study report, the learning-rate range test."""
