"""`GET /api/v1/sightings/{id}`: where else was this vehicle seen (`index.sightings`), as a router
the app includes with one line. `by=track` reads the id as a video track's; `POST
/api/v1/sightings` takes a photo (multipart `image`, optional `plate`)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.concurrency import run_in_threadpool

from carsearch.core.imaging import ImageError, open_rgb
from carsearch.index.query import QueryError
from carsearch.index.sightings import Sightings
from carsearch.serve.hits import api_hit
from carsearch.serve.service import ApiError

FIELDS = ("probability", "plate_similarity", "travel_s", "travel_window", "plausible")


def sighting_hit(r: dict, rank: int = 0) -> dict:
    """A sighting as the API's hit (`api_hit`) plus its same-vehicle fields; `confident` is the sighting's."""
    return {**api_hit(r, rank), **{k: r.get(k) for k in FIELDS}, "confident": r["confident"]}


def sightings_router(svc) -> APIRouter:
    router = APIRouter(tags=["search"])

    @router.get("/api/v1/sightings/{item_id}")
    def sightings(
        item_id: str,
        by: Literal["hit", "track"] = Query("hit", description="hit: an indexed hit's id; track: a video track's id"),
        k: int = Query(50, ge=1, le=1000, description="candidates weighed (nearest by appearance)"),
    ):
        """The vehicle's sightings at every camera and time, grouped by camera in time order, each
        with a calibrated same-vehicle probability (appearance, plate, camera network): `confident`
        timelines first, `others` apart; `cameras`: how many cameras saw it (`note`: why there is no
        probability or nothing is confident)."""
        svc.refresh()
        try:
            sg = Sightings(svc.s)
            res = sg.of_id(item_id, k) if by == "hit" else sg.of_track(item_id, k)
        except QueryError as e:
            if "is not in the index" in str(e):
                raise ApiError(404, "unknown_id", str(e)) from None
            raise
        return res.as_dict(sighting_hit)

    @router.post("/api/v1/sightings")
    async def sightings_of_photo(
        image: UploadFile = File(..., description="a photo of the vehicle (jpg, png, webp, ...)"),
        plate: str | None = Form(None, description="its plate, if known"),
        k: int = Form(50, ge=1, le=1000),
    ):
        """The sightings of the vehicle in an uploaded photo (no camera or time: every camera)."""
        limit = svc.cfg.max_upload_bytes
        data = await image.read(limit + 1)
        if len(data) > limit:
            raise ApiError(413, "too_large", f"image over the upload limit ({limit} bytes, serve.max_upload_bytes)")
        try:
            picture = await run_in_threadpool(open_rgb, data, max_pixels=svc.cfg.max_image_pixels)
        except ImageError as e:
            raise ApiError(400, "bad_image", f"the uploaded file is not a usable image ({e})") from None
        svc.refresh()
        res = await run_in_threadpool(Sightings(svc.s).of_image, picture, k, None, plate or None)
        return res.as_dict(sighting_hit)

    return router
