"""Raw-data sources: each writes a RAW directory in the raw-data contract (impressions/, clicks/, items/).

`synthetic` (the click model of `click_model`, written as Parquet) and `movielens` (a converter).
"""
