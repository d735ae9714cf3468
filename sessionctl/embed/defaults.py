"""The default model's id and the distance thresholds (a leaf: the models import it)."""

#: Recorded in index manifests for vectors made by the default model.
DEFAULT_MODEL_ID = "sessionctl/all-MiniLM-L6-v2-int8"
#: The default ``relevant`` threshold for MiniLM: a follow-up question sits
#: about 0.51 from the message it refers to (90th percentile 0.67).
MINILM_DISTANCE_THRESHOLD = 0.70
#: The default threshold for litellm models. Not measured (no network here);
#: a conservative middle of the 0-2 scale. Configure a per-model value instead.
LITELLM_DISTANCE_THRESHOLD = 0.50
