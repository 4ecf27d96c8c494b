"""BI rollups: the tables (``tables``), their maintenance (``refresh``) and the reads
(``reads``). Re-exported here: what the models' registry needs."""

from prism.models.bi.tables import ROLLUPS, Invalidation

__all__ = ["ROLLUPS", "Invalidation"]
