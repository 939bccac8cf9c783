"""Results: the ResultRecord and what it holds (statistics, the timeline), the one reader of a run folder
(RunFolder), the metric catalog, and writing a run folder on a disk that may fill up."""
