"""Where requests arrive: the ASGI app, its routes and middleware, the GraphQL view, the WebSocket
transport, uvicorn."""
