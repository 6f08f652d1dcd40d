"""The `tfds.core.DatasetInfo` of datasets this package generates (the embedded `embedded_*` builders)."""

import tensorflow_datasets as tfds


class GeneratedDatasetInfo(tfds.core.DatasetInfo):
    """DatasetInfo of a dataset generated on this machine, never published to the TFDS bucket.

    `tfds.builder` calls `initialize_from_bucket` on every construction of an unprepared builder: it creates a
    temp dir (`/tmp/tmp*tfds`, never removed) and asks gs://tfds-data for metadata over the network. Neither
    applies to a dataset generated here, so this info skips both (hand-written because TFDS has no option for it).
    """

    def initialize_from_bucket(self) -> None:
        """Nothing to fetch: the dataset's metadata comes from its generator."""

