"""The shop's REST API (DRF). Runs on request threads."""

from __future__ import annotations

from django.contrib.auth import authenticate, login, logout
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from rest_framework import generics, status
from rest_framework.authtoken.models import Token
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

import e2e_otel

from .checkout import place_order
from .faults import get_faults
from .models import Cart, CartItem, Category, Order, Product
from .payments import PaymentDeclined
from .serializers import (
    AddToCartSerializer,
    CartSerializer,
    CategorySerializer,
    CheckoutSerializer,
    LoginSerializer,
    OrderSerializer,
    ProductSerializer,
    UserSerializer,
)


class LoginView(APIView):
    """Session login that also hands out an API token, so both auth flows start here."""

    authentication_classes: list = []

    def post(self, request: Request) -> Response:
        payload = LoginSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        user = authenticate(request._request, **payload.validated_data)
        if user is None:
            return Response({"detail": "invalid username or password"}, status=status.HTTP_401_UNAUTHORIZED)
        login(request._request, user)
        token, _ = Token.objects.get_or_create(user=user)
        return Response({"user": UserSerializer(user).data, "token": token.key})


class LogoutView(APIView):
    permission_classes = [IsAuthenticated]

    def post(self, request: Request) -> Response:
        logout(request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(APIView):
    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        return Response(UserSerializer(request.user).data)


class CategoryList(generics.ListAPIView):
    serializer_class = CategorySerializer
    queryset = Category.objects.all()


def _flag(value: str | None) -> bool | None:
    if value is None:
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


class ProductList(generics.ListAPIView):
    """Products, optionally by ``?category=<slug>``.

    The N+1 fault (or ``?n_plus_one=1``) drops the ``select_related`` so the serializer loads each
    product's category with its own query; ``?n_plus_one=0`` forces the fixed query.
    """

    serializer_class = ProductSerializer

    def get_queryset(self) -> QuerySet[Product]:
        queryset = Product.objects.filter(is_active=True).order_by("name")
        category = self.request.query_params.get("category")
        if category:
            queryset = queryset.filter(category__slug=category)
        n_plus_one = _flag(self.request.query_params.get("n_plus_one"))
        if n_plus_one is None:
            n_plus_one = get_faults().n_plus_one
        return queryset if n_plus_one else queryset.select_related("category")


class ProductDetail(generics.RetrieveAPIView):
    serializer_class = ProductSerializer
    queryset = Product.objects.filter(is_active=True).select_related("category")


def _cart_of(user) -> Cart:  # type: ignore[no-untyped-def]
    cart, _ = Cart.objects.get_or_create(user=user)
    return cart


def _cart_response(cart: Cart, code: int = status.HTTP_200_OK) -> Response:
    cart = Cart.objects.prefetch_related("items__product__category").get(pk=cart.pk)
    return Response(CartSerializer(cart).data, status=code)


class CartView(APIView):
    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        return _cart_response(_cart_of(request.user))


class CartItems(APIView):
    """``POST {"product": id, "quantity": n}`` sets the quantity of a product in the cart."""

    permission_classes = [IsAuthenticated]

    def post(self, request: Request) -> Response:
        payload = AddToCartSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        cart = _cart_of(request.user)
        CartItem.objects.update_or_create(
            cart=cart, product=payload.validated_data["product"],
            defaults={"quantity": payload.validated_data["quantity"]},
        )
        cart.save(update_fields=["updated_at"])
        return _cart_response(cart, status.HTTP_201_CREATED)


class CartItemDetail(APIView):
    permission_classes = [IsAuthenticated]

    def delete(self, request: Request, pk: int) -> Response:
        item = get_object_or_404(CartItem, pk=pk, cart__user=request.user)
        item.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class CheckoutView(APIView):
    permission_classes = [IsAuthenticated]

    def post(self, request: Request) -> Response:
        payload = CheckoutSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        # Names the workflow explicitly, whatever route or baggage say.
        with e2e_otel.workflow("checkout", user=request.user) as checkout:
            try:
                order = place_order(request.user, **payload.validated_data)
            except PaymentDeclined as exc:
                # The exception is already recorded on the payment span (one error group); the
                # workflow is closed as failed explicitly and the client gets a clean 402.
                e2e_otel.WorkflowTracer.fail_workflow(checkout, str(exc.detail))
                return Response({"detail": exc.detail, "code": "payment_declined",
                                 "correlation_id": checkout.correlation_id}, status=exc.status_code)
        order = Order.objects.prefetch_related("items__product").get(pk=order.pk)
        return Response(OrderSerializer(order).data, status=status.HTTP_201_CREATED)


class OrderList(generics.ListAPIView):
    serializer_class = OrderSerializer
    permission_classes = [IsAuthenticated]

    def get_queryset(self) -> QuerySet[Order]:
        return Order.objects.filter(user=self.request.user).prefetch_related("items__product")
