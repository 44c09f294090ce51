"""Mesh construction and sharding rules: tensor parallelism inside a replica (GSPMD over a
("tp",) mesh), data parallelism as independent replicas on the rows of a ("dp", "tp") mesh."""

from jaxengine.parallel.mesh import DP, TP, make_mesh, replica_meshes
from jaxengine.parallel.sharding import TensorParallel

__all__ = ["DP", "TP", "TensorParallel", "make_mesh", "replica_meshes"]
