"""Pseudo-labels: kNN, the sparse k-reciprocal Jaccard distance, and DBSCAN on it.

    labels, stats = hhcl.cluster.pseudo_labels(features, eps=0.6)   # (N,) int64, -1 = outlier
    distances = hhcl.cluster.jaccard_distance(features)             # (N, N) scipy CSR
"""

from hhcl.cluster.jaccard import jaccard_distance
from hhcl.cluster.knn import KNN_METHODS, Neighbours, nearest_neighbours
from hhcl.cluster.pseudo_labels import PHASES, pseudo_labels

__all__ = ["KNN_METHODS", "PHASES", "Neighbours", "jaccard_distance", "nearest_neighbours", "pseudo_labels"]
