"""/v1/load_lora_adapter and /v1/unload_lora_adapter (vLLM's routes and bodies), over the engine's adapters.

Both apps take these: an adapter loaded here is the one `engine.add_lora` registers, with the same
checks, so a cell, the magics and the server see one list. A server loads adapters only from the
directories its options allow (`lora_dirs`).
"""
from fastapi import FastAPI
from pydantic import BaseModel

from swiftnb.errors import SwiftnbError
from swiftnb.server.errors import swiftnb_error_json
from swiftnb.server.options import ServerOptions


class LoadLoRARequest(BaseModel):
    lora_name: str
    lora_path: str


class UnloadLoRARequest(BaseModel):
    lora_name: str


def add_adapter_routes(app: FastAPI, engine, options: ServerOptions) -> None:
    paths = ('/v1/load_lora_adapter', '/v1/unload_lora_adapter')
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, 'path', None) not in paths]

    @app.post(paths[0])
    async def load_lora_adapter(body: LoadLoRARequest):
        try:
            options.check_lora_path(body.lora_path)
            await engine.add_lora_async(body.lora_name, body.lora_path)  # loaded by the code that will serve it
        except SwiftnbError as error:  # both apps answer alike (vLLM's handlers would make an AdapterError a 400)
            return swiftnb_error_json(error)
        return {'message': f"Success: LoRA adapter '{body.lora_name}' added successfully."}

    @app.post(paths[1])
    async def unload_lora_adapter(body: UnloadLoRARequest):
        try:
            engine.remove_lora(body.lora_name)
        except SwiftnbError as error:  # an unknown name (the base model's among them): 404, as vLLM's server
            return swiftnb_error_json(error)
        return {'message': f"Success: LoRA adapter '{body.lora_name}' removed successfully."}
