"""Paper PN's Privacy-Net: the adversarial encoder, its segmenter and the Siamese discriminator.

- :mod:`~medveil.privacynet.train`: the networks and their alternating updates (2-D or 3-D);
- :mod:`~medveil.privacynet.evaluate`: paper PN's Tables 2-3 on simulated subjects or your own arrays,
  and the trained encoder saved as an ``adversarial`` key.
"""
