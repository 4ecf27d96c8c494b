"""BI: the rollups' refresh (``refresh``) and the reports read from them (``reports``)."""
