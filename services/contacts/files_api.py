"""HTTP API for files: CSV imports into a list (upload, progress, rejected
rows, cancel) and CSV exports of a list or a segment.

An upload is refused with 413 before anything is stored when its
Content-Length is over SANDESH_MAX_UPLOAD_BYTES, and while it streams when
it has none; the file part is streamed straight to the import directory
(see UploadRequest) and processed later by the contacts worker."""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile

import marshmallow as ma
from flask import Request, Response, g, request
from flask.views import MethodView
from marshmallow import validate
from werkzeug.exceptions import RequestEntityTooLarge

from services.contacts import audit, csvread, domain, import_files, imports, schemas, usecases
from services.contacts.api import account, actor, after_id, paged, ports
from shared.http import Blueprint
from shared.http.errors import ApiError, error_response, not_found, refuse_head
from shared.http.pagination import PageArgs
from shared.http.service import runtime

blp = Blueprint("contacts-files", __name__, url_prefix="/api/v1",
                description="Contact imports and exports")
EXPORT_BATCH = 1000
# The form's other fields are held in memory while parsed (Werkzeug's own
# default); the schema then refuses what is over its own lengths, naming it.
MAX_FORM_FIELD_BYTES = 500 * 1024


class UploadRequest(Request):
    """Streams uploaded file parts into the import directory instead of an
    anonymous temporary file, so a large upload is written once."""

    def _get_file_stream(self, total_content_length, content_type, filename=None,
                         content_length=None):
        directory = os.path.join(self.environ.get("sandesh.import_dir") or tempfile.gettempdir(),
                                 "incoming")
        os.makedirs(directory, exist_ok=True)
        stream = tempfile.NamedTemporaryFile("w+b", dir=directory, suffix=".part", delete=False)
        g.setdefault("upload_parts", []).append(stream.name)
        return stream


@blp.before_request
def _limit_uploads():
    if request.method == "POST" and request.path.endswith("/imports"):
        config = runtime().config
        request.max_content_length = config.max_upload_bytes
        request.max_form_memory_size = MAX_FORM_FIELD_BYTES
        request.environ["sandesh.import_dir"] = config.import_dir
        if request.content_length is not None and request.content_length > config.max_upload_bytes:
            raise ApiError(413, "payload_too_large",
                           f"the upload is larger than {config.max_upload_bytes} bytes")


@blp.errorhandler(RequestEntityTooLarge)
def _too_large(_exc):
    """A chunked upload cut at the limit while streaming: the same answer as
    a Content-Length over it (the partial file goes in teardown). Within the
    limit, it was a form field other than the file, held in memory."""
    limit = runtime().config.max_upload_bytes
    if request.content_length is not None and request.content_length <= limit:
        return error_response(413, "payload_too_large",
                              f"a form field other than file is larger than "
                              f"{MAX_FORM_FIELD_BYTES} bytes, or the form has more than "
                              f"{request.max_form_parts} parts")
    return error_response(413, "payload_too_large", f"the upload is larger than {limit} bytes")


@blp.teardown_request
def _drop_unclaimed_parts(_exc=None):
    for path in g.pop("upload_parts", []):
        try:
            os.remove(path)   # claimed parts were renamed away already
        except OSError:
            pass


# -- schemas -------------------------------------------------------------------
class JsonObject(ma.fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        try:
            parsed = json.loads(value) if isinstance(value, str) else value
        except json.JSONDecodeError as exc:
            raise ma.ValidationError(f"not JSON: {exc.msg}") from None
        except (ValueError, RecursionError):  # a number of over 4,300 digits, deep nesting
            raise ma.ValidationError("not JSON this API can read") from None
        if not isinstance(parsed, dict):
            raise ma.ValidationError('expected {"email": column, "name": column, '
                                     '"fields": {key: column}}')
        return parsed


class ImportForm(ma.Schema):
    mode = ma.fields.String(load_default="add", validate=validate.OneOf(["add", "upsert"]),
                            metadata={"description": "add: new contacts only; upsert: also "
                                                     "update existing ones"})
    mapping = JsonObject(load_default=None, metadata={
        "description": 'JSON {"email": col, "name": col, "fields": {key: col}}; a col is a '
                       "header name or a 0-based number. Guessed from the header when absent."})
    delimiter = ma.fields.String(validate=validate.OneOf([",", ";", "\t", "|"]))
    encoding = ma.fields.String(validate=validate.OneOf(["utf-8", "windows-1252", "latin-1"]))
    has_header = ma.fields.Boolean()
    policy_version = ma.fields.String(validate=validate.Length(max=100))
    consent_wording = ma.fields.String(validate=validate.Length(max=5000))


class ImportFile(ma.Schema):
    file = ma.fields.Raw(metadata={"type": "string", "format": "binary"}, required=True)


class Counters(ma.Schema):
    read = ma.fields.Integer()
    created = ma.fields.Integer()
    updated = ma.fields.Integer()
    skipped_duplicate = ma.fields.Integer()
    skipped_suppressed = ma.fields.Integer()
    rejected = ma.fields.Integer()


class ImportOut(ma.Schema):
    id = ma.fields.String(attribute="_id")
    list_id = ma.fields.String()
    status = ma.fields.String(metadata={"description": "pending, running, done, failed, cancelled"})
    cancel_requested = ma.fields.Function(lambda job: bool(job.get("cancel_requested")), metadata={
        "description": "cancelled while running: it stops once the rows it wrote are announced"})
    mode = ma.fields.String(attribute="options.mode")
    counters = ma.fields.Nested(Counters)
    size_bytes = ma.fields.Integer(attribute="file.size")
    progress = ma.fields.Method("_progress", metadata={"description": "bytes read / size, 0..1"})
    dialect = ma.fields.Dict()
    error = ma.fields.String(allow_none=True)
    created_at = ma.fields.DateTime()
    started_at = ma.fields.DateTime(allow_none=True)
    finished_at = ma.fields.DateTime(allow_none=True)

    def _progress(self, job: dict) -> float:
        if job.get("status") == "done":
            return 1.0
        size = job.get("file", {}).get("size") or 0
        return round(min(1.0, job.get("checkpoint", {}).get("offset", 0) / size), 4) if size else 0.0


ImportPage = schemas.page_of(ImportOut, "ImportPage")


# -- imports -------------------------------------------------------------------
def _import_of(import_id: str) -> dict:
    job = ports().store.imports.find_one({"_id": import_id, "account_id": account()}) \
        if domain.is_id(import_id) else None
    if job is None:
        raise not_found("import")
    return job


@blp.route("/lists/<list_id>/imports")
class ListImports(MethodView):
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, ImportPage)
    def get(self, args, list_id):
        """The list's imports, oldest first."""
        p = ports()
        usecases.get_list(p, account(), list_id)
        items = p.store._page(p.store.imports, {"account_id": account(), "list_id": list_id},
                              after_id(args), args["limit"])
        return paged(items, args)

    @blp.arguments(ImportForm, location="form")
    @blp.arguments(ImportFile, location="files")
    @blp.response(202, ImportOut)
    def post(self, form, _files, list_id):
        """Upload a CSV (multipart field `file`) into the list. It is imported
        in the background: poll GET /imports/<id> for the counters, then
        fetch the rejected rows at /imports/<id>/rejected. 413 when the file
        is over the size limit."""
        p = ports()
        usecases.get_list(p, account(), list_id)
        if form.get("mapping") is not None:  # what can be checked before the file is read
            try:
                csvread.check_mapping(form["mapping"], p.store.field_definitions(account()))
            except csvread.MappingError as exc:
                raise usecases.invalid("mapping", str(exc)) from None
        upload = request.files.get("file")
        if upload is None or not upload.filename and not upload.stream:
            raise usecases.invalid("file", "attach the CSV as the multipart field `file`")
        config = runtime().config
        import_id = domain.ordered_id()
        path = import_files.upload_path(config.import_dir, account(), import_id)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        part = getattr(upload.stream, "name", None)
        upload.stream.flush()
        if isinstance(part, str) and part in g.get("upload_parts", []):
            os.replace(part, path)   # same directory tree: a rename, not a copy
            g.upload_parts.remove(part)
        else:   # a small part werkzeug kept in memory
            with import_files.open_private(path, "wb") as stored:
                upload.save(stored)
        try:
            import_files.as_utf8(path)
        except BaseException:
            os.remove(path)   # no import names it: nothing would ever delete the addresses in it
            raise
        size = os.path.getsize(path)
        if size > config.max_upload_bytes:   # UTF-16 text grows by up to half as UTF-8
            os.remove(path)
            raise ApiError(413, "payload_too_large", f"the upload is larger than "
                                                     f"{config.max_upload_bytes} bytes as UTF-8")
        if size == 0:
            os.remove(path)
            raise usecases.invalid("file", "the file is empty")
        job = imports.new_import(account(), list_id, import_id, path, size,
                                 {**form, "filename": (upload.filename or "")[:200]}, actor(),
                                 domain.now())
        try:
            p.store.imports.insert_one(job)
        except BaseException:
            os.remove(path)   # no import names it: nothing would ever delete the addresses in it
            raise
        return job


@blp.route("/imports/<import_id>")
class ImportOne(MethodView):
    @blp.response(200, ImportOut)
    def get(self, import_id):
        """An import's status and counters (rows read, created, updated,
        skipped as duplicate or suppressed, rejected)."""
        return _import_of(import_id)


@blp.route("/imports/<import_id>/cancel")
class ImportCancel(MethodView):
    @blp.response(200, ImportOut)
    def post(self, import_id):
        """Stop an import that has not finished (409 for one done or failed).
        A pending one stops at once;
        a running one once the rows it has written are announced, their
        consent logged and counted (`cancel_requested` until then), and
        what it wrote stays."""
        job = _import_of(import_id)
        imports_col = ports().store.imports
        if imports_col.update_one({"_id": job["_id"], "status": "pending"},
                                  {"$set": {"status": "cancelled",
                                            "finished_at": domain.now()}}).modified_count:
            imports.discard_upload(job)   # no worker will ever read it
        imports_col.update_one({"_id": job["_id"], "status": "running"},
                               {"$set": {"cancel_requested": domain.now()}})
        job = _import_of(import_id)
        if job["status"] in ("done", "failed"):   # cancelling twice is fine; this is not
            raise ApiError(409, "invalid_state", f"the import is {job['status']}: there is "
                                                 "nothing left to cancel")
        return job


@blp.route("/imports/<import_id>/rejected")
class ImportRejected(MethodView):
    @blp.response(200, description="CSV: row, reason, the row's cells",
                  content_type="text/csv")
    def get(self, import_id):
        """The rejected rows as CSV (row number, reason, original cells)."""
        job = _import_of(import_id)
        path = import_files.rejected_path(runtime().config.import_dir, job["account_id"], job["_id"])
        if not os.path.exists(path):
            return Response("row,reason,cells\r\n", mimetype="text/csv")
        size = job["checkpoint"]["rejected_bytes"] if job["status"] in ("pending", "running") \
            else os.path.getsize(path)
        handle = open(path, "rb")
        return Response(_read_upto(handle, size), mimetype="text/csv", headers={
            "Content-Disposition": f'attachment; filename="import-{job["_id"]}-rejected.csv"'})


def _read_upto(handle, size: int):
    with handle:
        left = size
        while left > 0:
            chunk = handle.read(min(64 * 1024, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


# -- exports -------------------------------------------------------------------
def _export(query: dict, list_id: str | None, filename: str, target: tuple[str, str]) -> Response:
    p = ports()
    account_id = account()
    audit.record(p.producer, account_id, "contacts.exported", actor(), *target)
    keys = sorted(p.store.field_definitions(account_id))
    header = ["id", "email", "name", "status"] + (["list_status"] if list_id else []) + \
        ["created_at"] + [f"fields.{k}" for k in keys]

    def rows():
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        for batch in p.store.find_contacts(account_id, query, batch_size=EXPORT_BATCH):
            for c in batch:
                cells = [c["_id"], c["email"], c.get("name"), c["status"]]
                if list_id:
                    cells.append(c.get("lists", {}).get(list_id, {}).get("status"))
                cells.append(c.get("created_at"))
                cells += [(c.get("fields") or {}).get(k) for k in keys]
                writer.writerow([domain.csv_safe(cell) for cell in cells])
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue().encode("utf-8")

    return Response(rows(), mimetype="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{filename}"'})


@blp.route("/lists/<list_id>/export")
class ListExport(MethodView):
    @blp.response(200, description="CSV of the list's members",
                  content_type="text/csv")
    def get(self, list_id):
        """The list's members as CSV, streamed (audited). Cells that a
        spreadsheet would read as a formula (= + - @ tab CR) are prefixed
        with a quote."""
        refuse_head()
        usecases.get_list(ports(), account(), list_id)
        return _export({"list_ids": list_id}, list_id, f"list-{list_id}.csv", ("list", list_id))


@blp.route("/segments/<segment_id>/export")
class SegmentExport(MethodView):
    @blp.response(200, description="CSV of the segment's contacts",
                  content_type="text/csv")
    def get(self, segment_id):
        """The contacts matching the segment now, as CSV, streamed (formula-safe,
        audited)."""
        refuse_head()
        query = usecases.segment_filter(ports(), account(), segment_id)
        return _export(query, None, f"segment-{segment_id}.csv", ("segment", segment_id))
