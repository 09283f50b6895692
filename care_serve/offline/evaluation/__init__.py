"""Evaluating model packages: accuracy, COCO-style mAP@0.5 and mIoU through the serving path."""
