"""``srw-sam eval``: point grids, boxes and everything mode through the teacher's decoder; mIoU tables."""
