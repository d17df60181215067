"""Control plane: the apigatewayv2 resource model, its store-backed service and wire protocol."""
