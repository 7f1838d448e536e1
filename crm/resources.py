"""django-import-export resources: mapping only.

``ContactResource`` maps a contacts file to ``Contact`` the way django-import-export does it by default: row by row,
matched on the external ID. The product's own import (``crm.importing``) is what the admin and the
``import_contacts`` command use; this resource is the baseline the benchmark compares it with
(``bench/import_contacts.py``), and a plain mapping for anyone using django-import-export directly. Headers are
recognised like the product's import (Korean, Shopify, Mailchimp, ours); phones are stored in E.164 and email domains
lower-cased.
"""

from __future__ import annotations

from import_export import fields, resources, widgets

from crm.importing.mapping import EMAIL, EXTERNAL_ID, NAME, PHONE, field_for_header, parse_email, parse_phone
from crm.models import Contact


class PhoneWidget(widgets.CharWidget):
    def clean(self, value, row=None, **kwargs):
        value = super().clean(value, row, **kwargs)
        return parse_phone(value) if value else ""


class EmailWidget(widgets.CharWidget):
    def clean(self, value, row=None, **kwargs):
        value = super().clean(value, row, **kwargs)
        return parse_email(value) if value else ""


class ContactResource(resources.ModelResource):
    external_id = fields.Field(attribute=EXTERNAL_ID, column_name=EXTERNAL_ID)
    name = fields.Field(attribute=NAME, column_name=NAME, widget=widgets.CharWidget())
    email = fields.Field(attribute=EMAIL, column_name=EMAIL, widget=EmailWidget())
    phone = fields.Field(attribute=PHONE, column_name=PHONE, widget=PhoneWidget())

    class Meta:
        model = Contact
        fields = (EXTERNAL_ID, NAME, EMAIL, PHONE)
        import_id_fields = (EXTERNAL_ID,)

    def before_import(self, dataset, **kwargs):
        """Rename the file's headers to our field names (회원ID → external_id, 휴대폰 → phone, ...)."""
        dataset.headers = [field_for_header(h) or h for h in dataset.headers]
        super().before_import(dataset, **kwargs)
