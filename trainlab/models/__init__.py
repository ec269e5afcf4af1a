"""Model families. Importing this package registers every model."""

from trainlab.models import (  # noqa: F401  (registration side effects)
    alexnet,
    cnn,
    detector,
    googlenet,
    instance_net,
    lenet,
    mlp,
    resnet,
    speednet,
    unet,
    vgg,
)
from trainlab.models.factory import (  # noqa: F401
    MODELS,
    create_model,
    list_models,
    model_from_config,
    model_options,
    register_model,
)

__all__ = ["MODELS", "create_model", "list_models", "model_options", "register_model"]
