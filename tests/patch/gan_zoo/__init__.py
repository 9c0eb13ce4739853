"""A stand-in for pytorch_GAN_zoo's PGAN networks (archived, not on PyPI), written for these tests from its
documented math (shared/reference/progan_anchors.md section 2) with its module, class, function and attribute
names and its GNet / DNet structure, so that progan_fast.patch meets the layout it meets in the repository
(`models.networks.custom_layers`, `.mini_batch_stddev_module`, `.progressive_conv_net`)."""
